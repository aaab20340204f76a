"""A generated product catalogue whose colours live only in the image vectors, and the benchmark
that shows the fused document tower uses them.

Products are (type, colour) combinations, several per combination. Titles and texts name the
type, material and style, never the colour; each product's `image_embedding` is
colour + 0.6·type + 0.4·material prototypes (seeded Gaussian vectors) plus Gaussian noise, as a
vision model's export would encode what the photo shows. Queries name a colour and a type. Half of
each combination's products are judged for the training queries (wordings "{colour} {type}" and
"{type} in {colour}"), the other half for the test queries ("a {colour} {type}"): a test product was
never in a training pair, so a model cannot have learnt its colour from its title.

`python -m deepseek_tf.bench.catalogue --output-dir DIR` writes the catalogue (DIR/data,
DIR/data_zeroed with every image vector zeroed, and DIR/data_files with a PNG file per product in
place of its vector: `catalogue_files`), trains configs/products_multimodal.yaml fused, text-only
(model.doc_inputs [text]) and fused on the image files the same way, and prints Recall@10 on the
test queries:
fused, its exported SavedModel and TFLite float32 files (with each one's minimum cosine to the
Keras document vectors over the catalogue), text-only, the fused model with the images zeroed, and
the model that reads the image files.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from deepseek_tf.bench.catalogue_files import backbone_weights, colours, with_image_files
from deepseek_tf.files import write_json

COLOURS = ("red", "blue", "green", "black", "white", "yellow", "pink", "grey")
TYPES = ("dress", "shirt", "sneakers", "backpack", "mug", "lamp", "scarf", "hat", "jacket", "sofa")
MATERIALS = ("cotton", "linen", "wool", "leather", "canvas", "ceramic", "velvet", "denim")
STYLES = ("classic", "modern", "slim", "casual", "vintage", "soft")
TRAIN_WORDINGS = ("{colour} {type}", "{type} in {colour}")
TEST_WORDING = "a {colour} {type}"
CONFIG = Path(__file__).resolve().parents[2] / "configs" / "products_multimodal.yaml"
FILE_IMAGE_SIZE = 64  # the image-file run's backbone input side
FILE_OVERRIDES = (
    "model.image_backbone=mobilenet_v3_small",
    f"model.image_size={FILE_IMAGE_SIZE}",
    "model.image_dim=576",
)


def catalogue(
    seed: int = 0,
    types: int = len(TYPES),
    colours: int = len(COLOURS),
    per_combo: int = 6,
    image_dim: int = 32,
    noise: float = 0.15,
    missing: float = 0.0,
) -> tuple[list[dict], list[dict], dict[str, list[tuple[str, str]]]]:
    """(corpus records, query records, {"train"|"test": [(query id, doc id)]}) of a seeded catalogue.

    image = P_colour + 0.6·P_type + 0.4·P_material + ε, P_* ~ N(0, I/image_dim), ε ~ N(0, noise²·I/image_dim);
    a `missing` fraction of the products has no image vector.
    """
    rng = np.random.default_rng(seed)
    scale = 1.0 / np.sqrt(image_dim)
    proto = {
        name: rng.standard_normal((len(values), image_dim)) * scale
        for name, values in (("colour", COLOURS), ("type", TYPES), ("material", MATERIALS))
    }
    # opaque ids in a shuffled order: a tie between products of the same text is broken by id or
    # corpus order, which must not follow colour
    ids = iter(f"p{i:05d}" for i in rng.permutation(types * colours * per_combo))
    corpus, queries, qrels = [], [], {"train": [], "test": []}
    for t, kind in enumerate(TYPES[:types]):
        for c, colour in enumerate(COLOURS[:colours]):
            docs = []
            for _ in range(per_combo):
                m, style = int(rng.integers(len(MATERIALS))), STYLES[int(rng.integers(len(STYLES)))]
                doc_id = next(ids)
                record = {
                    "_id": doc_id,
                    "title": f"{style} {MATERIALS[m]} {kind}",
                    "text": f"a {kind} made of {MATERIALS[m]}",
                }
                image = proto["colour"][c] + 0.6 * proto["type"][t] + 0.4 * proto["material"][m]
                image = image + rng.standard_normal(image_dim) * noise * scale
                if rng.random() >= missing:
                    record["image_embedding"] = [round(float(x), 5) for x in image]
                corpus.append(record)
                docs.append(doc_id)
            half = per_combo // 2  # the first half is judged for training, the rest for testing
            wordings = [("train", j, w) for j, w in enumerate(TRAIN_WORDINGS)] + [
                ("test", len(TRAIN_WORDINGS), TEST_WORDING)
            ]
            for split, j, wording in wordings:
                qid = f"q-{kind}-{colour}-{j}"
                queries.append({"_id": qid, "text": wording.format(colour=colour, type=kind)})
                qrels[split] += [(qid, d) for d in (docs[:half] if split == "train" else docs[half:])]
    return sorted(corpus, key=lambda r: r["_id"]), queries, qrels


def write_beir(directory: str | Path, corpus: list[dict], queries: list[dict], qrels: dict) -> Path:
    """The catalogue in BEIR layout: corpus.jsonl, queries.jsonl, qrels/{train,test}.tsv (grade 1)."""
    directory = Path(directory)
    (directory / "qrels").mkdir(parents=True, exist_ok=True)
    for name, rows in (("corpus.jsonl", corpus), ("queries.jsonl", queries)):
        (directory / name).write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    for split, pairs in qrels.items():
        lines = ["query-id\tcorpus-id\tscore"] + [f"{q}\t{d}\t1" for q, d in pairs]
        (directory / "qrels" / f"{split}.tsv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return directory


def zeroed(corpus: list[dict]) -> list[dict]:
    """The corpus with every image vector replaced by zeros (the ablation row)."""
    return [
        {**r, "image_embedding": [0.0] * len(r["image_embedding"])} if "image_embedding" in r else r for r in corpus
    ]


def min_cosine_to_keras(model: Path, exported: Path, corpus: list[dict]) -> float:
    """min over the catalogue's documents of cos(Keras vector, exported vector), images included."""
    from deepseek_tf.data import image_inputs
    from deepseek_tf.export.tflite import compare
    from deepseek_tf.retrieval.artifacts import load_embedder

    keras_embedder, other = load_embedder(str(model)), load_embedder(str(exported))
    texts = [f"{r['title']} {r['text']}" for r in corpus]
    images = image_inputs({r["_id"]: r for r in corpus}, [r["_id"] for r in corpus], other.image_dim, warn=False)
    return compare(keras_embedder.encode_docs(texts, images=images), other.encode_docs(texts, images=images))[
        "min_cosine"
    ]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m deepseek_tf.bench.catalogue",
        description="Fused text+image vs text-only retrieval on a generated catalogue whose colours "
        "only the images carry.",
    )
    p.add_argument("--output-dir", required=True, help="where the data, the two runs and results.json go")
    p.add_argument("--seed", type=int, default=0, help="seeds the catalogue (training seeds come from the config)")
    p.add_argument("--config", default=str(CONFIG), help="the fused model's config (default: %(default)s)")
    p.add_argument("--write-only", action="store_true", help="write the catalogue and stop")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    from deepseek_tf.config import load_config
    from deepseek_tf.evaluate.report import evaluate
    from deepseek_tf.export.saved_model import export_saved_model
    from deepseek_tf.export.towers import export_tflite
    from deepseek_tf.train import train

    args = parse_args(argv)
    out = Path(args.output_dir)
    corpus, queries, qrels = catalogue(args.seed)
    data = write_beir(out / "data", corpus, queries, qrels)
    data_zeroed = write_beir(out / "data_zeroed", zeroed(corpus), queries, qrels)
    print(f"catalogue: {len(corpus)} products, {len(queries)} queries -> {data}, {data_zeroed}", file=sys.stderr)
    if args.write_only:
        return 0
    files, pixels = with_image_files(corpus, colours(qrels), out / "data_files")
    data_files = write_beir(out / "data_files", files, queries, qrels)
    weights = backbone_weights(out / "mobilenet_v3_small.weights.h5", pixels, FILE_IMAGE_SIZE)
    runs = {
        "fused": [f"data.dataset={data}"],
        "text-only": [f"data.dataset={data}", "model.doc_inputs=[text]"],
        "fused-files": [f"data.dataset={data_files}", f"model.image_weights={weights}", *FILE_OVERRIDES],
    }
    for name, overrides in runs.items():
        train(load_config(args.config, overrides), out / name, verbose=0 if args.quiet else 1)
    # encode_doc(text, image_embedding, image_mask) exported, each checked against Keras on export
    export_saved_model(out / "fused" / "model", out / "fused_saved_model", overwrite=True)
    export_tflite(out / "fused" / "model", out / "fused_tflite" / "fused", overwrite=True)
    exports = {
        "fused, exported SavedModel": out / "fused_saved_model",
        "fused, exported TFLite float32": out / "fused_tflite" / "fused.query.tflite",
    }
    rows = {
        "fused": (out / "fused" / "model", data),
        **{name: (path, data) for name, path in exports.items()},
        "text-only": (out / "text-only" / "model", data),
        "fused, image zeroed": (out / "fused" / "model", data_zeroed),
        "fused, image files through MobileNetV3Small": (out / "fused-files" / "model", data_files),
    }
    results = {}
    for name, (model, dataset) in rows.items():
        figures = evaluate(str(model), str(dataset), "test", top_k=100, verbose=False)["dense"]
        results[name] = {k: figures[k] for k in ("recall@10", "ndcg@10", "queries")}
    for name, path in exports.items():
        results[name]["min_cosine_to_keras"] = min_cosine_to_keras(out / "fused" / "model", path, corpus)
    print("| system | Recall@10 | nDCG@10 | queries | min cosine to Keras |\n|---|---|---|---|---|")
    for name, r in results.items():
        cosine = f"{r['min_cosine_to_keras']:.6f}" if "min_cosine_to_keras" in r else ""
        print(f"| {name} | {r['recall@10']:.3f} | {r['ndcg@10']:.3f} | {r['queries']} | {cosine} |")
    write_json(out / "results.json", {"seed": args.seed, "config": args.config, "rows": results}, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
