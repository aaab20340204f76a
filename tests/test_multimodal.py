"""Text + image documents: configs/products_multimodal.yaml trained end to end on a tiny generated
catalogue, its model/ reloaded, evaluated and exported as a SavedModel, bad image vectors refused,
and the doc tower's wiring."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf
from conftest import ROOT, run_cli_here

from deepseek_tf.bench.catalogue import catalogue, write_beir
from deepseek_tf.config import load_config
from deepseek_tf.data import image_inputs
from deepseek_tf.errors import ConfigError, UserError
from deepseek_tf.models.fusion import FUSIONS

CONFIG = ROOT / "configs" / "products_multimodal.yaml"
TINY = [
    "model.image_dim=8",
    "model.hidden_dim=16",
    "model.intermediate_dim=32",
    "train.batch_size=4",
    "train.epochs=1",
    "train.steps_per_epoch=3",
]


@pytest.fixture(scope="module")
def tiny_catalogue(tmp_path_factory):
    corpus, queries, qrels = catalogue(seed=1, types=3, colours=3, per_combo=2, image_dim=8, missing=0.25)
    return write_beir(tmp_path_factory.mktemp("catalogue"), corpus, queries, qrels), corpus


@pytest.fixture(scope="module")
def multimodal_run(tiny_catalogue, tmp_path_factory):
    from deepseek_tf.train import train

    workdir = tmp_path_factory.mktemp("mm_run")
    train(load_config(CONFIG, [f"data.dataset={tiny_catalogue[0]}", *TINY]), workdir, verbose=0)
    return workdir


def test_trains_reloads_and_evaluates(multimodal_run, tiny_catalogue, tmp_path):
    import keras

    from deepseek_tf.models.loading import load_trained

    model, _, config = load_trained(multimodal_run / "model")
    assert config.model.doc_inputs == ("text", "image") and model.doc_fusion is not None
    model.save(tmp_path / "again.keras")
    again = keras.saving.load_model(tmp_path / "again.keras")
    ids = {"token_ids": tf.constant([[2, 5, 6, 3]]), "padding_mask": tf.constant([[1, 1, 1, 1]])}
    ids |= {"image": tf.random.normal([1, 8], seed=3), "image_mask": tf.constant([1.0])}
    np.testing.assert_allclose(model.encode_doc(ids).numpy(), again.encode_doc(ids).numpy(), atol=1e-6)

    result = run_cli_here(
        "deepseek_tf.evaluate", "--model", str(multimodal_run / "model"), "--dataset", str(tiny_catalogue[0])
    )
    assert result.returncode == 0, result.stderr
    assert "dense" in result.stdout
    assert "have no 'image_embedding'" in result.stderr  # missing images: counted, once

    # what reads text only refuses the model rather than dropping its images
    from deepseek_tf.retrieval.artifacts import load_embedder

    with pytest.raises(UserError, match="reads image vectors too; this command gives it text only"):
        load_embedder(str(multimodal_run / "model")).encode_docs(["a red dress"])


# int8: a 16-wide model calibrated on a dozen texts keeps cosine 0.92, so the bound is lowered;
# what it checks is that calibration feeds the document tower the corpus's image vectors.
@pytest.mark.parametrize("quantize,bound", [("none", None), ("int8", 0.8)])
def test_tflite_doc_tower_takes_images(multimodal_run, tiny_catalogue, tmp_path, quantize, bound):
    """PREFIX.doc.tflite has inputs text, image_embedding, image_mask and matches Keras on the
    corpus, images and placeholders alike."""
    from deepseek_tf.data import load_beir
    from deepseek_tf.export.tflite import TOLERANCES, compare
    from deepseek_tf.retrieval.artifacts import load_embedder

    export = ["--model", str(multimodal_run / "model"), "--format", "tflite", "--quantize", quantize]
    export += ["--output", str(tmp_path / "t"), "--dataset", str(tiny_catalogue[0])]
    export += ["--tolerance", str(bound)] if bound else []
    result = run_cli_here("deepseek_tf.export", *export)
    assert result.returncode == 0, result.stderr
    tflite, keras_embedder = (
        load_embedder(str(tmp_path / "t.query.tflite")),
        load_embedder(str(multimodal_run / "model")),
    )
    assert tflite.image_dim == 8
    ds = load_beir(tiny_catalogue[0], "test")
    doc_ids = sorted(ds.corpus)
    texts, images = [ds.doc_text(d) for d in doc_ids], image_inputs(ds.corpus, doc_ids, 8, warn=False)
    assert 0 < images[1].sum() < len(doc_ids)  # both paths: images and the placeholder
    want, got = keras_embedder.encode_docs(texts, images=images), tflite.encode_docs(texts, images=images)
    check, bound = TOLERANCES[quantize] if bound is None else ("min_cosine", bound)
    figures = compare(want, got)
    assert figures[check] <= bound if check == "max_abs_diff" else figures[check] >= bound
    # the image reaches the file: another image, another vector
    other = (np.roll(images[0], 1, axis=0), np.ones_like(images[1]))
    moved = compare(got, tflite.encode_docs(texts, images=other))
    assert moved["min_cosine"] < 0.99
    with pytest.raises(UserError, match="reads image vectors too"):
        tflite.encode_docs(texts)


def test_saved_model_export_takes_images(multimodal_run, tiny_catalogue, tmp_path):
    """encode_doc(text, image_embedding, image_mask) of the SavedModel matches Keras on the corpus."""
    from deepseek_tf.data import load_beir
    from deepseek_tf.retrieval.artifacts import load_embedder

    out = tmp_path / "sm"
    export = ["--model", str(multimodal_run / "model"), "--format", "saved_model", "--output", str(out)]
    result = run_cli_here("deepseek_tf.export", *export)
    assert result.returncode == 0, result.stderr
    keras_embedder, exported = load_embedder(str(multimodal_run / "model")), load_embedder(str(out))
    assert exported.image_dim == 8
    ds = load_beir(tiny_catalogue[0], "test")
    doc_ids = list(ds.corpus)
    texts, images = [ds.doc_text(d) for d in doc_ids], image_inputs(ds.corpus, doc_ids, 8, warn=False)
    assert 0 < images[1].sum() < len(doc_ids)  # both paths: images and the placeholder
    want, got = keras_embedder.encode_docs(texts, images=images), exported.encode_docs(texts, images=images)
    cosine = np.sum(want * got, axis=1) / np.linalg.norm(want, axis=1) / np.linalg.norm(got, axis=1)
    assert cosine.min() >= 0.999 and np.abs(want - got).max() < 1e-5


@pytest.mark.parametrize(
    "value, said",
    [
        ([0.1] * 7, "has 7 numbers; model.image_dim is 8"),
        ([0.1] * 7 + [float("nan")], "holds nan at position 7"),
        ([0.1] * 7 + [float("inf")], "holds inf at position 7"),
        ("0.1 0.2", "must be a list of 8 numbers"),
        ([0.1] * 7 + ["x"], "must be a list of 8 numbers"),
        ([0.1] * 7 + [True], "must be a list of 8 numbers"),
    ],
)
def test_bad_image_vectors_name_document_and_field(value, said):
    corpus = {"good": {"title": "t", "text": "x", "image_embedding": [0.0] * 8}, "bad-7": {"image_embedding": value}}
    with pytest.raises(UserError) as e:
        image_inputs(corpus, ["good", "bad-7"], 8)
    message = str(e.value)
    assert "'bad-7'" in message and "'image_embedding'" in message and said in message and "\n" not in message


def test_missing_images_are_masked_and_counted_once(capsys):
    corpus = {"a": {"image_embedding": [1.0, 2.0]}, "b": {"title": "no image"}, "c": {}}
    vectors, mask = image_inputs(corpus, ["a", "b", "a", "c", "b"], 2)
    assert vectors.shape == (5, 2) and mask.tolist() == [1, 0, 1, 0, 0]
    assert not vectors[1].any()
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "2 of 3 documents have no 'image_embedding'" in err


def test_bad_vector_in_corpus_stops_training_before_the_workdir(tmp_path):
    from deepseek_tf.train import train

    corpus, queries, qrels = catalogue(seed=1, types=2, colours=2, per_combo=2, image_dim=8)
    bad = next(r for r in corpus if r["_id"] == qrels["train"][0][1])  # a document training reads
    bad["image_embedding"] = bad["image_embedding"][:5]
    data = write_beir(tmp_path / "bad", corpus, queries, qrels)
    with pytest.raises(UserError, match=f"document '{bad['_id']}': 'image_embedding' has 5 numbers"):
        train(load_config(CONFIG, [f"data.dataset={data}", *TINY]), tmp_path / "run", verbose=0)
    assert not (tmp_path / "run" / "config.yaml").exists()


def test_config_keys():
    assert load_config(None).model.doc_inputs == ("text",)
    with pytest.raises(ConfigError, match="'model.doc_inputs' must be one of text, image"):
        load_config(CONFIG, ["model.doc_inputs=[text, photo]"])
    with pytest.raises(ConfigError, match="'model.fusion' must be one of concat, sum, gated"):
        load_config(CONFIG, ["model.fusion=mean"])
    with pytest.raises(ConfigError, match="names an item twice"):
        load_config(CONFIG, ["model.doc_inputs=[text, text]"])


def _doc_model(fusion: str):
    from deepseek_tf.models import build_model

    config = load_config(CONFIG, [*TINY, f"model.fusion={fusion}"])
    return build_model(config, vocab_size=50)


@pytest.mark.parametrize("fusion", list(FUSIONS))
def test_doc_tower_reads_the_image(fusion):
    model = _doc_model(fusion)
    ids = {"token_ids": tf.constant([[2, 5, 6, 3]] * 3), "padding_mask": tf.ones([3, 4], tf.int32)}
    image = tf.random.normal([3, 8], seed=1)
    present = model.encode_doc(ids | {"image": image, "image_mask": tf.ones([3])}).numpy()  # (3, dim)
    # the same text with three different images: three different documents
    assert np.abs(present[0] - present[1]).max() > 1e-4 and np.abs(present[1] - present[2]).max() > 1e-4
    # a missing image reads the placeholder, whatever zeros or numbers sit in its row
    missing = model.encode_doc(ids | {"image": image, "image_mask": tf.zeros([3])}).numpy()
    np.testing.assert_allclose(missing[0], missing[1], atol=1e-6)
    assert np.abs(missing[0] - present[0]).max() > 1e-4
    np.testing.assert_allclose(np.linalg.norm(present, axis=1), 1.0, atol=1e-5)
    # the query tower stays text
    assert model({"query": ids})["query"].shape == (3, present.shape[1])


def test_same_title_other_image_is_not_a_duplicate():
    from deepseek_tf.models.dual_encoder import text_keys

    ids = {"token_ids": tf.constant([[2, 5, 3]] * 2), "padding_mask": tf.ones([2, 3], tf.int32)}
    assert len(set(text_keys(ids).numpy())) == 1
    image = tf.constant([[1.0, 0.0], [0.0, 1.0]])
    assert len(set(text_keys(ids | {"image": image, "image_mask": tf.ones([2])}).numpy())) == 2
