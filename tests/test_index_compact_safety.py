"""Writes to a built index never lose or half-write anything: a build rerun over an index that took
writes (`index --update`, compacted or not) is refused rather than rebuilt from the corpus; an
`index --update` that fails on a later record (a filter field of the wrong type, an image file
that does not decode) writes none of the file; `index --compact` / `--update` on a path that
holds no index create nothing there; a filter or stored number must be finite."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from conftest import reuse_embedders, run_cli_here

FILTERABLE = "brand,price,in_stock"


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def products(prefix: str, n: int) -> list[dict]:
    return [
        {"_id": f"{prefix}{i}", "title": f"{prefix} kettle {i}", "text": f"steel kettle number {i}", "brand": "acme"}
        | {"price": float(i), "in_stock": i % 2 == 0}
        for i in range(n)
    ]


def index(*args: str):
    return run_cli_here("deepseek_tf.cli", "index", "--quiet", *args)


def refused(result, *words: str) -> None:
    """A non-zero exit with one line on stderr that holds WORDS."""
    assert result.returncode != 0, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and all(w in lines[0] for w in words), result.stderr


def snapshot(directory: Path) -> dict[str, bytes]:
    return {str(p.relative_to(directory)): p.read_bytes() for p in sorted(directory.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def tiny_embedder(tiny_run):
    from deepseek_tf.retrieval.artifacts import load_embedder

    return load_embedder(str(tiny_run / "model"))


@pytest.fixture
def model(tiny_run, tiny_embedder, monkeypatch) -> str:
    """tiny_run's model path; the commands reuse its embedder, loaded once."""
    path = str(tiny_run / "model")
    reuse_embedders(monkeypatch, {path: tiny_embedder})
    return path


@pytest.fixture(scope="module")
def built(tiny_run, tmp_path_factory) -> tuple[Path, Path]:
    """(corpus of 24 products, its index: 3 shards of 10, filterable brand, price, in_stock)."""
    from deepseek_tf.index import build_index

    root = tmp_path_factory.mktemp("safety")
    corpus = write_jsonl(root / "shop.jsonl", products("p", 24))
    out = root / "index"
    build_index(str(tiny_run / "model"), corpus, out, shard_size=10, verbose=False, filterable=FILTERABLE.split(","))
    return corpus, out


@pytest.fixture
def shop(built, tmp_path) -> tuple[Path, Path]:
    """A fresh copy of the built index for each test: the tests write to it."""
    corpus, out = built
    return corpus, Path(shutil.copytree(out, tmp_path / "index"))


def test_a_rebuild_over_written_documents_is_refused(shop, model, tmp_path):
    """Rebuilding an updated or compacted index from its corpus with another backend would read
    only the corpus's shards: refused, touching nothing; the same arguments only check it."""
    from deepseek_tf.index.live import LiveIndex

    corpus, out = shop
    build = ["--model", model, "--corpus", str(corpus), "--output", str(out), "--shard-size", "10"]
    build += ["--filterable", FILTERABLE]
    new = write_jsonl(tmp_path / "new.jsonl", products("n", 8))
    assert index("--update", str(out), "--corpus", str(new)).returncode == 0
    for step in ("update", "compact"):
        if step == "compact":
            assert index("--compact", str(out)).returncode == 0
        before = snapshot(out)
        refused(index(*build, "--backend", "faiss-hnsw"), str(out), "build into a new --output")
        assert snapshot(out) == before
        assert index(*build).returncode == 0  # what it was built with: checked, nothing changed
        assert snapshot(out) == before
        assert LiveIndex.open(out).count == 32
    assert json.loads((out / "manifest.json").read_text())["count"] == 32


def test_an_update_with_a_bad_filter_value_writes_nothing(shop, model, tmp_path):
    """The 4th of 5 records holds a price of the wrong type; with 2 a batch the first 2 used to be
    written before it was read."""
    from deepseek_tf.index.updates import log_path

    _, out = shop
    before = snapshot(out)
    rows = products("n", 5)
    rows[3]["price"] = "cheap"
    new = write_jsonl(tmp_path / "new.jsonl", rows)
    refused(index("--update", str(out), "--corpus", str(new), "--batch-size", "2"), "'n3'", "price", "not a number")
    assert not log_path(out).exists() and snapshot(out) == before


def test_a_non_finite_number_is_refused_naming_the_document(shop, model):
    """NaN or an infinity, in a filter field or a field only stored, is refused naming the document
    and the field, nothing written: no range means anything on it, and JSON has no such number.
    (A corpus line that holds one is refused as the corpus is read.)"""
    from deepseek_tf.errors import UserError
    from deepseek_tf.index.filters import Columns
    from deepseek_tf.index.live import LiveIndex
    from deepseek_tf.index.updates import log_path

    _, out = shop
    live = LiveIndex.open(out)
    for name in ("price", "weight"):  # filterable; stored only
        for bad in (float("inf"), float("nan"), [1.0, float("-inf")]):
            with pytest.raises(UserError, match=f"document 'x': {name}: .* is not a finite number"):
                live.upsert([{"_id": "x", "title": "kettle", name: bad}])
    assert not log_path(out).exists() and live.count == 24
    with pytest.raises(UserError, match="document 'b': price: -Infinity is not a finite number"):
        Columns.from_values({"price": "number"}, [{"price": 1.0}, {"price": float("-inf")}], ["a", "b"])


def test_an_update_with_an_undecodable_image_file_writes_nothing(
    image_file_run, image_file_shop, image_file_embedder, tmp_path, monkeypatch
):
    """Image files are decoded a batch at a time: a junk file in the last of 3 batches used to
    leave the first 4 documents in the log."""
    from deepseek_tf.index import build_index
    from deepseek_tf.index.updates import log_path

    data, _, corpus = image_file_shop
    model = str(image_file_run / "model")
    reuse_embedders(monkeypatch, {model: image_file_embedder})
    out = tmp_path / "i"
    build_index(model, data / "corpus.jsonl", out, verbose=False)
    before = snapshot(out)
    (tmp_path / "images").symlink_to(data / "images")  # beside new.jsonl: its relative paths resolve there
    (tmp_path / "junk.png").write_bytes(b"\x89PNG but not really an image")
    rows = [{"_id": f"n{i}", "title": f"hat {i}", "image": corpus[2 + i]["image"]} for i in range(5)]
    rows.append({"_id": "n5", "title": "hat 5", "image": "junk.png"})
    new = write_jsonl(tmp_path / "new.jsonl", rows)
    refused(index("--update", str(out), "--corpus", str(new), "--batch-size", "2"), "'n5'")
    assert not log_path(out).exists() and snapshot(out) == before


def test_compact_and_update_create_nothing_where_no_index_is(tmp_path):
    """A plain directory keeps only what it held; a mistyped path is not created (a later build
    there would be refused as a non-empty directory)."""
    plain = tmp_path / "plain"
    plain.mkdir()
    (plain / "notes.txt").write_text("the user's")
    corpus = write_jsonl(tmp_path / "new.jsonl", products("n", 1))
    typo = tmp_path / "typo" / "index"
    for args in (["--compact", str(plain)], ["--update", str(plain), "--corpus", str(corpus)]):
        refused(index(*args), str(plain))
        assert snapshot(plain) == {"notes.txt": b"the user's"} and [p.name for p in plain.iterdir()] == ["notes.txt"]
    for args in (["--compact", str(typo)], ["--update", str(typo), "--corpus", str(corpus)]):
        refused(index(*args), str(typo))
        assert not (tmp_path / "typo").exists()
