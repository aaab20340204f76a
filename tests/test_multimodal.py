"""Text + image documents: configs/products_multimodal.yaml trained end to end on a tiny generated
catalogue (conftest's image_vector_run), its model/ reloaded, evaluated and exported (TFLite int8,
SavedModel), bad image vectors refused, and the doc tower's wiring."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf
from conftest import MULTIMODAL_CONFIG, MULTIMODAL_TINY, reuse_embedders

from deepseek_tf.bench.catalogue import catalogue, write_beir
from deepseek_tf.config import load_config
from deepseek_tf.data import image_inputs, load_beir
from deepseek_tf.errors import ConfigError, UserError
from deepseek_tf.models.fusion import FUSIONS
from deepseek_tf.retrieval.artifacts import load_embedder


@pytest.fixture(scope="module")
def embedder(image_vector_run):
    """image_vector_run's model loaded once (read-only)."""
    return load_embedder(str(image_vector_run / "model"))


def corpus_inputs(data) -> tuple[list[str], tuple[np.ndarray, np.ndarray]]:
    """The test corpus's texts and image vectors, images and placeholders alike."""
    ds = load_beir(data, "test")
    doc_ids = sorted(ds.corpus)
    texts, images = [ds.doc_text(d) for d in doc_ids], image_inputs(ds.corpus, doc_ids, 8, warn=False)
    assert 0 < images[1].sum() < len(doc_ids)  # both paths: images and the placeholder
    return texts, images


def test_trains_reloads_and_evaluates(image_vector_run, image_vector_shop, embedder, tmp_path, capsys, monkeypatch):
    import keras

    from deepseek_tf.evaluate.report import evaluate
    from deepseek_tf.models.loading import load_trained

    model, _, config = load_trained(image_vector_run / "model")
    assert config.model.doc_inputs == ("text", "image") and model.doc_fusion is not None
    model.save(tmp_path / "again.keras")
    again = keras.saving.load_model(tmp_path / "again.keras")
    ids = {"token_ids": tf.constant([[2, 5, 6, 3]]), "padding_mask": tf.constant([[1, 1, 1, 1]])}
    ids |= {"image": tf.random.normal([1, 8], seed=3), "image_mask": tf.constant([1.0])}
    np.testing.assert_allclose(model.encode_doc(ids).numpy(), again.encode_doc(ids).numpy(), atol=1e-6)

    reuse_embedders(monkeypatch, {image_vector_run / "model": embedder})  # evaluate's load: the one above
    assert "dense" in evaluate(str(image_vector_run / "model"), str(image_vector_shop[0]))
    assert capsys.readouterr().err.count("have no 'image_embedding'") == 1  # missing images: counted, once

    # what reads text only refuses the model rather than dropping its images
    with pytest.raises(UserError, match="reads image vectors too; this command gives it text only"):
        embedder.encode_docs(["a red dress"])


def test_tflite_doc_tower_takes_images(image_vector_run, image_vector_shop, embedder, tmp_path):
    """PREFIX.doc.tflite has inputs text, image_embedding, image_mask and matches Keras on the
    corpus, images and placeholders alike. int8: a 16-wide model calibrated on a dozen texts keeps
    cosine ~0.93, so the bound is lowered; what it checks is that calibration feeds the document
    tower the corpus's image vectors. (float32 files of a fused document tower: test_image_export.)"""
    from deepseek_tf.export.tflite import compare
    from deepseek_tf.export.towers import export_tflite

    model, data = str(image_vector_run / "model"), str(image_vector_shop[0])
    export_tflite(model, tmp_path / "t", "int8", data, tolerance=0.8)
    tflite = load_embedder(str(tmp_path / "t.query.tflite"))
    assert tflite.image_dim == 8
    texts, images = corpus_inputs(data)
    got = tflite.encode_docs(texts, images=images)
    assert compare(embedder.encode_docs(texts, images=images), got)["min_cosine"] >= 0.8
    # the image reaches the file: another image, another vector
    other = (np.roll(images[0], 1, axis=0), np.ones_like(images[1]))
    moved = compare(got, tflite.encode_docs(texts, images=other))
    assert moved["min_cosine"] < 0.99
    with pytest.raises(UserError, match="reads image vectors too"):
        tflite.encode_docs(texts)


def test_saved_model_export_takes_images(image_vector_run, image_vector_shop, embedder, tmp_path):
    """encode_doc(text, image_embedding, image_mask) of the SavedModel matches Keras on the corpus."""
    from deepseek_tf.export.saved_model import export_saved_model

    model, out = image_vector_run / "model", tmp_path / "sm"
    export_saved_model(model, out)
    exported = load_embedder(str(out))
    assert exported.image_dim == 8
    texts, images = corpus_inputs(image_vector_shop[0])
    want, got = embedder.encode_docs(texts, images=images), exported.encode_docs(texts, images=images)
    cosine = np.sum(want * got, axis=1) / np.linalg.norm(want, axis=1) / np.linalg.norm(got, axis=1)
    assert cosine.min() >= 0.999 and np.abs(want - got).max() < 1e-5


def test_quantization_report_refuses_fused_models(image_vector_run, image_vector_shop, tmp_path):
    from deepseek_tf.export.quantization import quantization_report

    with pytest.raises(UserError, match="--report measures text-only towers"):
        quantization_report(str(image_vector_run / "model"), str(image_vector_shop[0]), str(tmp_path / "r"))


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
        train(load_config(MULTIMODAL_CONFIG, [f"data.dataset={data}", *MULTIMODAL_TINY]), tmp_path / "run", verbose=0)
    assert not (tmp_path / "run" / "config.yaml").exists()


def test_config_keys():
    assert load_config(None).model.doc_inputs == ("text",)
    with pytest.raises(ConfigError, match="'model.doc_inputs' must be one of text, image"):
        load_config(MULTIMODAL_CONFIG, ["model.doc_inputs=[text, photo]"])
    with pytest.raises(ConfigError, match="'model.fusion' must be one of concat, sum, gated"):
        load_config(MULTIMODAL_CONFIG, ["model.fusion=mean"])
    with pytest.raises(ConfigError, match="names an item twice"):
        load_config(MULTIMODAL_CONFIG, ["model.doc_inputs=[text, text]"])


def _doc_model(fusion: str):
    from deepseek_tf.models import build_model

    config = load_config(MULTIMODAL_CONFIG, [*MULTIMODAL_TINY, f"model.fusion={fusion}"])
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
