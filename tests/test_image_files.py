"""Documents with image files: decoded and resized in tf.data, encoded by a keras.applications
backbone whose weights come from a local file, fused with the text; the trained model keeps the
backbone, missing files read the placeholder (counted once), bad fields and files are refused."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf
from conftest import ROOT, run_cli_here

from deepseek_tf.bench.catalogue import catalogue, write_beir
from deepseek_tf.config import load_config
from deepseek_tf.data import doc_images, load_beir
from deepseek_tf.errors import ConfigError, UserError

CONFIG = ROOT / "configs" / "products_multimodal.yaml"
SIZE = 32


def tiny(data, weights) -> list[str]:
    return [
        f"data.dataset={data}",
        "model.image_backbone=mobilenet_v3_small",
        f"model.image_weights={weights}",
        f"model.image_size={SIZE}",
        "model.image_dim=576",
        "model.hidden_dim=16",
        "model.intermediate_dim=32",
        "train.batch_size=4",
        "train.epochs=1",
        "train.steps_per_epoch=2",
    ]


def write_png(path, rgb, rng, size=12) -> None:
    pixels = np.clip(np.asarray(rgb) + rng.normal(0, 10, (size, size, 3)), 0, 255).astype(np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    tf.io.write_file(str(path), tf.io.encode_png(pixels))


@pytest.fixture(scope="module")
def shop(tmp_path_factory):
    """A tiny catalogue whose images are PNG files of each product's colour; one product names a
    file that is not there and one has no image."""
    import keras

    root = tmp_path_factory.mktemp("shop")
    corpus, queries, qrels = catalogue(seed=1, types=2, colours=3, per_combo=2, image_dim=8)
    for i, record in enumerate(corpus):
        record.pop("image_embedding")
        if i > 0:  # record 0 has no image; record 1 names a file that is not there
            record["image"] = f"images/{record['_id']}.png"  # relative to corpus.jsonl
    data = write_beir(root / "data", corpus, queries, qrels)
    rng = np.random.default_rng(0)
    for record in corpus[2:]:
        write_png(data / record["image"], rng.integers(0, 256, 3), rng)
    encoder = keras.applications.MobileNetV3Small(
        include_top=False, weights=None, input_shape=(SIZE, SIZE, 3), pooling="avg", include_preprocessing=True
    )
    # Freshly initialised, its activations vanish (outputs ~1e-11): one training-mode pass with
    # momentum 0 sets every BatchNormalization's statistics from real pixels, so the vectors carry
    # the images' colours as pretrained weights would.
    for layer in encoder.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.momentum = 0.0
    encoder(rng.uniform(0, 255, (16, SIZE, SIZE, 3)).astype(np.float32), training=True)
    weights = root / "mobilenet_v3_small.weights.h5"
    encoder.save_weights(str(weights))
    return data, weights, corpus


@pytest.fixture(scope="module")
def run(shop, tmp_path_factory):
    from deepseek_tf.train import train

    workdir = tmp_path_factory.mktemp("run")
    train(load_config(CONFIG, tiny(*shop[:2])), workdir, verbose=0)
    return workdir


def test_the_model_keeps_the_backbone_and_reads_files(run, shop, capsys):
    """The reloaded model's image vectors equal the weights file's backbone on the same pixels,
    and documents' vectors follow their image files."""
    import keras

    from deepseek_tf.data.image_files import pixel_batches
    from deepseek_tf.retrieval.artifacts import load_embedder

    data, weights, _ = shop
    embedder = load_embedder(str(run / "model"))
    assert embedder.image_reader is not None and embedder.image_reader.dim == 576
    ds = load_beir(data, "test")
    doc_ids = sorted(ds.corpus)
    files = [ds.corpus[d]["image"] for d in doc_ids[2:]]
    pixels = next(iter(pixel_batches(files, SIZE, 64)))
    fresh = keras.applications.MobileNetV3Small(
        include_top=False, weights=None, input_shape=(SIZE, SIZE, 3), pooling="avg", include_preprocessing=True
    )
    fresh.load_weights(str(weights))
    want = fresh(pixels).numpy()
    assert np.abs(want).mean() > 0.01  # vectors of some size, so the comparison can tell weights apart
    got = embedder.image_reader.encode(pixels)
    # compiled vs eager kernels differ in the last digits (up to 4e-3 on a few of 576 numbers)
    cosine = np.sum(got * want, -1) / (np.linalg.norm(got, axis=-1) * np.linalg.norm(want, axis=-1))
    assert cosine.min() > 0.9999, cosine

    vectors, mask = doc_images(ds.corpus, doc_ids, 576, reader=embedder.image_reader)
    assert mask.tolist() == [0.0, 0.0] + [1.0] * (len(doc_ids) - 2)
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "2 of" in err and "1 name a missing file" in err and "1 have no 'image'" in err
    texts = [ds.doc_text(d) for d in doc_ids]
    docs = embedder.encode_docs(texts, images=(vectors, mask))
    # the same texts with the image files swapped around: other documents
    swapped = embedder.encode_docs(texts, images=(np.roll(vectors, 1, axis=0), mask))
    assert np.abs(docs[2:] - swapped[2:]).max() > 1e-3
    np.testing.assert_allclose(docs[:2], swapped[:2], atol=1e-6)  # placeholders stay put


def test_evaluate_and_saved_model_read_image_files(run, shop, tmp_path):
    data = str(shop[0])
    result = run_cli_here("deepseek_tf.evaluate", "--model", str(run / "model"), "--dataset", data)
    assert result.returncode == 0, result.stderr
    assert "dense" in result.stdout and "documents have no image file" in result.stderr


def test_bad_image_files_name_document_and_field(run, shop, tmp_path):
    from deepseek_tf.retrieval.artifacts import load_embedder

    reader = load_embedder(str(run / "model")).image_reader
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"not an image at all")
    corpus = {"good": {"image": str(next(shop[0].glob("images/*.png")))}, "p-9": {"image": str(broken)}}
    with pytest.raises(UserError) as e:
        doc_images(corpus, ["good", "p-9"], 576, reader=reader)
    assert str(e.value).startswith("document 'p-9': 'image'") and "is not an image" in str(e.value)
    with pytest.raises(UserError, match="document 'p-3': 'image' must be an image file's path, got int"):
        doc_images({"p-3": {"image": 7}}, ["p-3"], 576, reader=reader)


def test_backbone_settings_are_checked(shop, tmp_path):
    from deepseek_tf.models.images import build_image_encoder

    data, weights, _ = shop
    config = lambda *more: load_config(CONFIG, [*tiny(data, weights), *more]).model
    with pytest.raises(ConfigError, match="mobilenet_v3_small gives 576-d image vectors: set model.image_dim: 576"):
        build_image_encoder(config("model.image_dim=512"))
    with pytest.raises(UserError, match="is not a file"):
        build_image_encoder(config(f"model.image_weights={tmp_path / 'none.h5'}"))
    with pytest.raises(UserError, match="does not load into mobilenet_v3_large"):
        build_image_encoder(config("model.image_backbone=mobilenet_v3_large", "model.image_dim=960"))
    with pytest.raises(ConfigError, match="model.doc_inputs"):
        from deepseek_tf.train import train

        train(load_config(CONFIG, [*tiny(data, weights), "model.doc_inputs=[text]"]), tmp_path / "w", verbose=0)
    assert not (tmp_path / "w").exists()


def test_config_choices_are_the_tables():
    """model.image_backbone and model.fusion (and so docs/configuration.md) name exactly the rows
    their tables dispatch; a row added to one but not the other fails."""
    import dataclasses

    from deepseek_tf.config import ModelConfig
    from deepseek_tf.models.fusion import FUSIONS
    from deepseek_tf.models.images import IMAGE_BACKBONES

    choices = {f.name: f.metadata["choices"] for f in dataclasses.fields(ModelConfig)}
    assert set(choices["image_backbone"]) == {"none", *IMAGE_BACKBONES}
    assert set(choices["fusion"]) == set(FUSIONS)


def test_index_reads_image_files(run, shop, tmp_path):
    """index encodes each document with its image file (paths relative to the corpus); the index's
    vectors equal encode_docs with the same images; a bad field stops it before anything is written;
    index --update reads files; a request naming a file is refused."""
    import json

    from deepseek_tf.index.built import load_built_index
    from deepseek_tf.index.compact import update_index
    from deepseek_tf.index.live import LiveIndex
    from deepseek_tf.retrieval.artifacts import load_embedder

    data, _, corpus = shop
    model = str(run / "model")
    cmd = ["index", "--model", model, "--corpus", str(data / "corpus.jsonl"), "--output", str(tmp_path / "i")]
    result = run_cli_here("deepseek_tf.cli", *cmd)
    assert result.returncode == 0, result.stderr
    assert result.stderr.count("documents have no image file") == 1  # one line for the whole build
    embedder = load_embedder(model)
    ds = load_beir(data, "test")
    doc_ids = sorted(ds.corpus)
    want = embedder.encode_docs(
        [ds.doc_text(d) for d in doc_ids], images=doc_images(ds.corpus, doc_ids, 576, reader=embedder.image_reader)
    )
    built = load_built_index(tmp_path / "i")
    got = np.stack([built.vectors[built.ids.index(d)] for d in doc_ids])
    np.testing.assert_allclose(got, want, atol=1e-5)
    assert built.fields(doc_ids[2])["image"] == corpus[2]["image"]  # the path is stored as written

    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"_id": "z1", "title": "hat", "image": ["x.png"]}) + "\n", encoding="utf-8")
    cmd = ["index", "--model", model, "--corpus", str(bad), "--output", str(tmp_path / "j")]
    result = run_cli_here("deepseek_tf.cli", *cmd)
    assert result.returncode != 0 and "document 'z1': 'image' must be an image file's path" in result.stderr
    assert not (tmp_path / "j").exists()

    new = data / "new.jsonl"  # beside the images, so the relative path resolves there
    new.write_text(json.dumps({"_id": "n1", "title": "red hat", "image": corpus[3]["image"]}) + "\n", "utf-8")
    update_index(tmp_path / "i", new, verbose=False)
    index = LiveIndex.open(tmp_path / "i")
    image = doc_images({"n1": {"image": str(data / corpus[3]["image"])}}, ["n1"], 576, reader=embedder.image_reader)
    expected = embedder.encode_docs(["red hat"], images=image)
    np.testing.assert_allclose(index.delta.docs["n1"][2], expected[0], atol=1e-5)
    with pytest.raises(UserError, match="documents.0: this index's model reads image files"):
        index.upsert([{"_id": "n2", "title": "hat", "image": "/etc/passwd"}])
