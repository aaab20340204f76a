"""A tiny BEIR-layout dataset, written by the tests and by `make smoke`.

Six product topics (one with Chinese text), four documents each; every query is
judged against the documents of its topic (grade 2 for the first two, 1 otherwise).
Run as a script: `python tests/fixtures.py DIR` writes it to DIR.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

TOPICS = {
    "dress": (
        "summer dress floral cotton",
        ["light summer dress", "floral cotton dress for women", "summer dress sale"],
    ),
    "laptop": (
        "lightweight laptop thin notebook battery",
        ["lightweight laptop", "thin notebook long battery", "laptop for travel"],
    ),
    "phone": (
        "iphone case shockproof cover 手机壳 防摔",
        ["iphone 15 pro 手机壳", "shockproof phone cover", "防摔 手机壳"],
    ),
    "shoes": (
        "running shoes trail sneakers cushion",
        ["trail running shoes", "cushioned sneakers", "shoes for running"],
    ),
    "coffee": (
        "espresso coffee machine grinder beans",
        ["espresso machine", "coffee grinder burr", "coffee beans dark roast"],
    ),
    "tent": ("camping tent waterproof two person", ["waterproof tent", "two person camping tent", "tent for hiking"]),
}
EXTRA = ["best price", "free shipping", "new model", "top rated"]


def write_tiny_beir(directory: str | Path) -> Path:
    directory = Path(directory)
    (directory / "qrels").mkdir(parents=True, exist_ok=True)
    corpus, queries, train, test = [], [], [], []
    for t, (topic, (words, topic_queries)) in enumerate(TOPICS.items()):
        for k in range(4):
            corpus.append(
                {"_id": f"{topic}-{k}", "title": f"{topic} {k}", "text": f"{words} {EXTRA[k]} item {t * 4 + k}"}
            )
        for j, query in enumerate(topic_queries):
            qid = f"q-{topic}-{j}"
            queries.append({"_id": qid, "text": query})
            for k in range(4):
                (test if j == 2 else train).append((qid, f"{topic}-{k}", 2 if k < 2 else 1))
    write = lambda name, rows: (directory / name).write_text(
        "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8"
    )
    write("corpus.jsonl", corpus)
    write("queries.jsonl", queries)
    for split, rows in (("train", train), ("test", test)):
        lines = ["query-id\tcorpus-id\tscore"] + [f"{q}\t{d}\t{s}" for q, d, s in rows]
        (directory / "qrels" / f"{split}.tsv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return directory


if __name__ == "__main__":
    print(write_tiny_beir(sys.argv[1] if len(sys.argv) > 1 else "tests/fixtures/tiny_beir"))
