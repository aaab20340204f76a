"""`index`, live upserts (LiveIndex, POST /documents, `index --update`) and the Beam encode step for
a model whose document tower reads image vectors: the same vectors as `encode_docs` with the
images, each record's own image passed on, bad vectors refused before anything is written, and the
documents without one counted in one warning."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from conftest import reuse_embedders, run_cli_here

from deepseek_tf.data.corpus import iter_documents
from deepseek_tf.data.images import image_inputs
from deepseek_tf.errors import UserError

DIM = 8
BAD = [
    ([0.1] * 7, "has 7 numbers; model.image_dim is 8"),
    ([0.1] * 7 + [float("nan")], "holds nan at position 7"),
    ("0.1 0.2", "must be a list of 8 numbers"),
    ({"x": 1}, "must be a list of 8 numbers"),
]


def write_corpus(path: Path, records: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def records(image_vector_shop) -> list[dict]:
    """18 products, 3 of them without an image vector (read-only)."""
    corpus = image_vector_shop[1]
    assert 0 < sum("image_embedding" not in r for r in corpus) < len(corpus)
    return corpus


@pytest.fixture(scope="module")
def model(image_vector_run) -> str:
    """A multimodal dual encoder trained for one step (only its wiring matters here)."""
    return str(image_vector_run / "model")


@pytest.fixture(scope="module")
def embedder(model):
    from deepseek_tf.retrieval.artifacts import load_embedder

    return load_embedder(model)


@pytest.fixture(scope="module", autouse=True)
def loaded_once(model, embedder):
    """What loads MODEL in this module (index, LiveIndex, the service, Beam) gets `embedder`,
    loaded once above: the tests here are about images, not loading."""
    with pytest.MonkeyPatch.context() as monkeypatch:
        reuse_embedders(monkeypatch, {model: embedder})
        yield


@pytest.fixture(scope="module")
def built(model, records, tmp_path_factory) -> tuple[Path, Path, str]:
    """(index dir, corpus, the build's stderr): 18 documents in shards of 5."""
    import contextlib
    import io

    base = tmp_path_factory.mktemp("mm_built")
    corpus = write_corpus(base / "corpus.jsonl", records)
    from deepseek_tf.index import build_index

    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        build_index(model, corpus, base / "index", shard_size=5, batch_size=4, verbose=True)
    return base / "index", corpus, err.getvalue()


def direct_vectors(embedder, corpus: Path) -> tuple[list[str], np.ndarray]:
    """(ids, vectors) of the corpus encoded here, each text with its own image vector."""
    docs = list(iter_documents(corpus))
    by_id = {r["_id"]: r for r in map(json.loads, corpus.read_text().splitlines())}
    ids = [d for d, _ in docs]
    images = image_inputs(by_id, ids, DIM, warn=False)
    return ids, embedder.encode_docs([t for _, t in docs], images=images)


def stored_vectors(path: Path) -> dict[str, np.ndarray]:
    """id -> the vector in the index's shards (row order: ids.json)."""
    manifest = json.loads((path / "manifest.json").read_text())
    vectors = np.concatenate([np.load(path / s["file"]) for s in manifest["shards"]])
    return dict(zip(json.loads((path / "ids.json").read_text()), vectors))


def test_index_holds_what_encode_docs_gives_with_the_images(built, embedder):
    from deepseek_tf.index import load_built_index

    path, corpus, err = built
    manifest = json.loads((path / "manifest.json").read_text())
    assert manifest["count"] == 18 and len(manifest["shards"]) == 4
    ids, want = direct_vectors(embedder, corpus)
    got = stored_vectors(path)
    assert list(got) == ids
    assert np.abs(np.stack([got[d] for d in ids]) - want).max() < 1e-5
    # the same ranking as exact search over the vectors encoded here
    index = load_built_index(path)
    q = embedder.encode_queries(["a red shirt", "blue sneakers", "green mug"])
    for query, hits in zip(q, index.search_dense(q, 10)):
        order = np.argsort(-(want @ query), kind="stable")[:10]
        assert [d for d, _ in hits] == [ids[i] for i in order]
    # the image vector is read for the model, not stored by default
    assert "image_embedding" not in manifest["fields"]
    assert all("image_embedding" not in index.fields(d) for d in ids)
    # the documents without one: counted in one warning for the whole build (4 shards)
    lines = [line for line in err.splitlines() if "have no 'image_embedding'" in line]
    said = "3 of 18 documents have no 'image_embedding'; the learned placeholder stands in for their image"
    assert lines == [f"warning: {corpus}: {said}"]


def test_each_document_gets_its_own_image(built, model, records, tmp_path):
    """The same corpus with one product's image vector changed: only that product's vector moves."""
    from deepseek_tf.index import build_index

    path, _, _ = built
    changed = [dict(r) for r in records]
    target = next(r for r in changed if "image_embedding" in r)
    target["image_embedding"] = [-x for x in target["image_embedding"]]
    corpus = write_corpus(tmp_path / "corpus.jsonl", changed)
    build_index(model, corpus, tmp_path / "index", shard_size=5, verbose=False)
    before, after = stored_vectors(path), stored_vectors(tmp_path / "index")
    moved = {d for d in before if np.abs(before[d] - after[d]).max() > 1e-4}
    assert moved == {target["_id"]}


def test_stored_only_when_fields_names_it(model, records, tmp_path):
    from deepseek_tf.index import build_index, load_built_index

    corpus = write_corpus(tmp_path / "corpus.jsonl", records[:6])
    build_index(model, corpus, tmp_path / "index", fields=["title", "image_embedding"], verbose=False)
    index = load_built_index(tmp_path / "index")
    with_image = next(r for r in records[:6] if "image_embedding" in r)
    assert index.fields(with_image["_id"]) == {
        "title": with_image["title"],
        "image_embedding": with_image["image_embedding"],
    }


def test_bad_vector_in_the_last_shard_stops_the_build_before_it_writes(model, records, tmp_path):
    """Each bad vector, in shard 5 of 6, is found by the scan before shard 0 is encoded: one line
    naming the document and the field (the `index` command's error line, for the first), nothing
    half-built."""
    from deepseek_tf.index import build_index

    for n, (value, said) in enumerate(BAD):
        bad = [dict(r) for r in records]
        bad[-1]["image_embedding"] = value
        corpus, out = write_corpus(tmp_path / f"corpus{n}.jsonl", bad), tmp_path / f"index{n}"
        if n == 0:
            args = ["index", "--model", model, "--corpus", str(corpus), "--output", str(out), "--shard-size", "3"]
            result = run_cli_here("deepseek_tf.cli", *args)
            assert result.returncode != 0
            errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
            assert len(errors) == 1 and "Traceback" not in result.stderr, result.stderr
            message = errors[0]
        else:
            with pytest.raises(UserError) as e:
                build_index(model, corpus, out, shard_size=3, verbose=False)
            message = str(e.value)
            assert "\n" not in message
        if "nan" in said:  # NaN is not JSON: the corpus reader refuses its line, before the scan
            assert f"{corpus.name}:{len(bad)}: invalid JSON" in message and not out.exists()
            continue
        assert f"'{bad[-1]['_id']}'" in message and "'image_embedding'" in message and said in message
        assert not out.exists()  # nothing half-built


def test_a_resumed_build_is_refused_before_it_touches_the_shards(built, model, records, tmp_path):
    """A build killed half-way, its corpus then given a bad vector: the shards stay as they were."""
    from deepseek_tf.index import build_index

    path, corpus, _ = built
    out = Path(shutil.copytree(path, tmp_path / "index"))
    (out / "manifest.json").unlink()
    before = {p.name: p.read_bytes() for p in (out / "shards").iterdir()}
    bad = [dict(r) for r in records]
    bad[-1]["image_embedding"] = [1.0] * 3
    with pytest.raises(UserError, match="'image_embedding' has 3 numbers"):
        build_index(model, write_corpus(corpus.parent / "bad.jsonl", bad), out, shard_size=5, verbose=False)
    assert {p.name: p.read_bytes() for p in (out / "shards").iterdir()} == before


@pytest.fixture
def live_copy(built, tmp_path) -> Path:
    return Path(shutil.copytree(built[0], tmp_path / "index"))


def test_live_upserts_encode_each_document_with_its_image(live_copy, embedder):
    from deepseek_tf.index.live import LiveIndex
    from deepseek_tf.index.updates import log_size

    index = LiveIndex.open(live_copy)
    image = list(np.linspace(-1, 1, DIM))
    docs = [
        {"_id": "n1", "title": "velvet lamp", "text": "a lamp", "image_embedding": image, "brand": "acme"},
        {"_id": "n2", "title": "velvet lamp", "text": "a lamp"},
    ]
    out = index.upsert(docs)
    assert out == {"upserted": 2, "seq": 1, "without_image": 1}
    images = (np.array([image, [0.0] * DIM], np.float32), np.array([1.0, 0.0], np.float32))
    want = embedder.encode_docs(["velvet lamp a lamp"] * 2, images=images)
    for row, doc_id in enumerate(("n1", "n2")):
        np.testing.assert_allclose(index.delta.docs[doc_id][2], want[row], atol=1e-5)
        assert index.search_dense(want[row : row + 1], 1)[0][0][0] == doc_id
    assert np.abs(want[0] - want[1]).max() > 1e-4  # the image made the difference
    assert index.fields("n1") == {"title": "velvet lamp", "text": "a lamp", "brand": "acme"}

    size = log_size(live_copy)
    for value, said in BAD:
        bad = [{"_id": "ok", "title": "fine"}, {"_id": "b1", "title": "broken", "image_embedding": value}]
        with pytest.raises(UserError) as e:
            index.upsert(bad)
        message = str(e.value)
        assert message.startswith("documents.1: ") and "'b1'" in message and "'image_embedding'" in message
        assert said in message and "\n" not in message
    assert log_size(live_copy) == size and "ok" not in index and index.seq == 1  # nothing reached the log
    assert "b1" not in LiveIndex.open(live_copy)


def test_post_documents_takes_image_vectors(live_copy, embedder):
    from fastapi.testclient import TestClient

    from deepseek_tf.index.updates import log_size
    from deepseek_tf.serve.app import create_app
    from deepseek_tf.serve.service import SearchService, ServiceOptions

    service = SearchService.open(live_copy, options=ServiceOptions(max_wait_ms=1))
    image = [0.5] * DIM
    try:
        with TestClient(create_app(service)) as client:
            doc = {"_id": "h1", "title": "wool hat", "text": "a hat", "image_embedding": image}
            r = client.post("/documents", json={"documents": [doc]})
            assert r.status_code == 200, r.text
            assert r.json()["upserted"] == 1 and r.json()["without_image"] == 0
            own = embedder.encode_docs(["wool hat a hat"], images=(np.array([image], np.float32), np.ones(1)))
            np.testing.assert_allclose(service._engine.index.delta.docs["h1"][2], own[0], atol=1e-5)

            size = log_size(live_copy)
            short = {"_id": "h2", "title": "x", "image_embedding": [0.5] * 3}
            r = client.post("/documents", json={"documents": [doc, short]})
            assert r.status_code == 422 and r.json()["error"]["code"] == "invalid_request"
            message = r.json()["error"]["message"]
            assert message.startswith("documents.1: ") and "'h2'" in message and "'image_embedding'" in message
            # 1e999 reads as infinity: the body is refused before any field is
            body = '{"documents": [{"_id": "h3", "title": "x", "image_embedding": [1e999, 0, 0, 0, 0, 0, 0, 0]}]}'
            r = client.post("/documents", content=body, headers={"content-type": "application/json"})
            assert r.status_code == 400 and r.json()["error"]["code"] == "invalid_json"
            assert "1e999 is out of a float's range" in r.json()["error"]["message"]
            assert log_size(live_copy) == size
            hits = client.post("/search", json={"query": "wool hat", "k": 20}).json()["results"]
            assert "h1" in {h["id"] for h in hits} and not {"h2", "h3"} & {h["id"] for h in hits}
            # a text alone is not a document of this model: refused, not a server error
            r = client.post("/embed", json={"texts": ["wool hat"], "tower": "doc"})
            assert r.status_code == 422 and "reads documents with images" in r.json()["error"]["message"]
            assert client.post("/embed", json={"texts": ["wool hat"], "tower": "query"}).status_code == 200
    finally:
        service.close()


def test_update_from_a_corpus_checks_every_vector_first(live_copy, embedder, tmp_path, capsys):
    from deepseek_tf.index.compact import compact_index, update_index
    from deepseek_tf.index.live import LiveIndex
    from deepseek_tf.index.updates import log_size

    new = [{"_id": f"u{i}", "title": f"canvas backpack {i}", "image_embedding": [0.1 * i] * DIM} for i in range(5)]
    new.append({"_id": "u5", "title": "canvas backpack 5"})
    bad = write_corpus(tmp_path / "bad.jsonl", [*new, {"_id": "u6", "title": "t", "image_embedding": [1.0]}])
    with pytest.raises(UserError, match="'u6': 'image_embedding' has 1 numbers"):
        update_index(live_copy, bad, batch_size=2, verbose=False)
    assert log_size(live_copy) == 0  # the first entries were not written either

    out = update_index(live_copy, write_corpus(tmp_path / "new.jsonl", new), batch_size=2, verbose=True)
    assert out["upserted"] == 6
    err = capsys.readouterr().err
    assert err.count("have no 'image_embedding'") == 1 and "1 of 6 documents" in err
    index = LiveIndex.open(live_copy)
    ids, want = direct_vectors(embedder, tmp_path / "new.jsonl")
    np.testing.assert_allclose(np.stack([index.delta.docs[d][2] for d in ids]), want, atol=1e-5)
    assert "image_embedding" not in index.fields("u0")
    # compaction moves the written vectors into the new base as they are: nothing is encoded again
    compact_index(live_copy, verbose=False)
    base = stored_vectors(live_copy)
    np.testing.assert_allclose(np.stack([base[d] for d in ids]), want, atol=1e-5)


def test_beam_passes_the_images_as_the_local_build_does(built, model, tmp_path):
    pytest.importorskip("apache_beam")
    from deepseek_tf.index.beam import build_index_beam

    path, corpus, _ = built
    manifest = build_index_beam(model, corpus, tmp_path / "beam", runner="DirectRunner", shard_size=5, verbose=False)
    assert manifest["count"] == 18
    local, beam = stored_vectors(path), stored_vectors(tmp_path / "beam")
    assert list(beam) == list(local)
    assert max(np.abs(local[d] - beam[d]).max() for d in local) < 1e-5
    for entry in manifest["shards"]:  # the same stored documents, image vectors left out
        assert (path / entry["docs"]).read_bytes() == (tmp_path / "beam" / entry["docs"]).read_bytes()
    assert not list((tmp_path / "beam" / "shards").glob(".*"))  # the workers' image files are gone
