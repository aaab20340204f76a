"""Documents with image files: decoded and resized in tf.data, encoded by a keras.applications
backbone whose weights come from a local file, fused with the text; the trained model keeps the
backbone, missing files read the placeholder (counted once), bad fields and files are refused.
The model is conftest's image_file_run (image_file_shop's PNG files, MobileNetV3Small at 32 px)."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import (
    IMAGE_SIZE,
    MULTIMODAL_CONFIG,
    MULTIMODAL_TINY,
    image_file_settings,
    reuse_embedders,
    run_cli_here,
)

from deepseek_tf.config import load_config
from deepseek_tf.data import doc_images, load_beir
from deepseek_tf.errors import ConfigError, UserError


def test_the_model_keeps_the_backbone_and_reads_files(image_file_embedder, image_file_shop, capsys):
    """The reloaded model's image vectors equal the weights file's backbone on the same pixels,
    and documents' vectors follow their image files."""
    import keras

    from deepseek_tf.data.image_files import pixel_batches

    data, weights, _ = image_file_shop
    assert image_file_embedder.image_reader is not None and image_file_embedder.image_reader.dim == 576
    ds = load_beir(data, "test")
    doc_ids = sorted(ds.corpus)
    files = [ds.corpus[d]["image"] for d in doc_ids[2:]]
    pixels = next(iter(pixel_batches(files, IMAGE_SIZE, 64)))
    fresh = keras.applications.MobileNetV3Small(
        include_top=False,
        weights=None,
        input_shape=(IMAGE_SIZE, IMAGE_SIZE, 3),
        pooling="avg",
        include_preprocessing=True,
    )
    fresh.load_weights(str(weights))
    want = fresh(pixels).numpy()
    assert np.abs(want).mean() > 0.01  # vectors of some size, so the comparison can tell weights apart
    got = image_file_embedder.image_reader.encode(pixels)
    # compiled vs eager kernels differ in the last digits (up to 4e-3 on a few of 576 numbers)
    cosine = np.sum(got * want, -1) / (np.linalg.norm(got, axis=-1) * np.linalg.norm(want, axis=-1))
    assert cosine.min() > 0.9999, cosine

    vectors, mask = doc_images(ds.corpus, doc_ids, 576, reader=image_file_embedder.image_reader)
    assert mask.tolist() == [0.0, 0.0] + [1.0] * (len(doc_ids) - 2)
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "2 of" in err and "1 name a missing file" in err and "1 have no 'image'" in err
    texts = [ds.doc_text(d) for d in doc_ids]
    docs = image_file_embedder.encode_docs(texts, images=(vectors, mask))
    # the same texts with the image files swapped around: other documents
    swapped = image_file_embedder.encode_docs(texts, images=(np.roll(vectors, 1, axis=0), mask))
    assert np.abs(docs[2:] - swapped[2:]).max() > 1e-3
    np.testing.assert_allclose(docs[:2], swapped[:2], atol=1e-6)  # placeholders stay put


def test_bad_image_files_name_document_and_field(image_file_embedder, image_file_shop, tmp_path):
    reader = image_file_embedder.image_reader
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"not an image at all")
    corpus = {"good": {"image": str(next(image_file_shop[0].glob("images/*.png")))}, "p-9": {"image": str(broken)}}
    with pytest.raises(UserError) as e:
        doc_images(corpus, ["good", "p-9"], 576, reader=reader)
    assert str(e.value).startswith("document 'p-9': 'image'") and "is not an image" in str(e.value)
    with pytest.raises(UserError, match="document 'p-3': 'image' must be an image file's path, got int"):
        doc_images({"p-3": {"image": 7}}, ["p-3"], 576, reader=reader)


def test_backbone_settings_are_checked(image_file_shop, tmp_path):
    from deepseek_tf.models.images import build_image_encoder
    from deepseek_tf.train import train

    data, weights, _ = image_file_shop
    tiny = [f"data.dataset={data}", *MULTIMODAL_TINY, *image_file_settings(weights)]
    config = lambda *more: load_config(MULTIMODAL_CONFIG, [*tiny, *more])
    with pytest.raises(ConfigError, match="mobilenet_v3_small gives 576-d image vectors: set model.image_dim: 576"):
        build_image_encoder(config("model.image_dim=512").model)
    with pytest.raises(UserError, match="is not a file"):
        build_image_encoder(config(f"model.image_weights={tmp_path / 'none.h5'}").model)
    with pytest.raises(UserError, match="does not load into mobilenet_v3_large"):
        build_image_encoder(config("model.image_backbone=mobilenet_v3_large", "model.image_dim=960").model)
    with pytest.raises(ConfigError, match="model.doc_inputs"):
        train(config("model.doc_inputs=[text]"), tmp_path / "w", verbose=0)
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


def test_index_reads_image_files(image_file_run, image_file_shop, image_file_embedder, tmp_path, monkeypatch):
    """`index` encodes each document with its image file (paths relative to the corpus); the index's
    vectors equal encode_docs with the same images; a bad field stops it before anything is written;
    index --update reads files; a request naming a file is refused."""
    import json

    from deepseek_tf.index import build_index
    from deepseek_tf.index.built import load_built_index
    from deepseek_tf.index.compact import update_index
    from deepseek_tf.index.live import LiveIndex

    data, _, corpus = image_file_shop
    model = str(image_file_run / "model")
    cmd = ["index", "--model", model, "--corpus", str(data / "corpus.jsonl"), "--output", str(tmp_path / "i")]
    result = run_cli_here("deepseek_tf.cli", *cmd)
    assert result.returncode == 0, result.stderr
    assert result.stderr.count("documents have no image file") == 1  # one line for the whole build
    reuse_embedders(monkeypatch, {model: image_file_embedder})  # the command loaded it; what follows reuses it
    ds = load_beir(data, "test")
    doc_ids = sorted(ds.corpus)
    want = image_file_embedder.encode_docs(
        [ds.doc_text(d) for d in doc_ids],
        images=doc_images(ds.corpus, doc_ids, 576, reader=image_file_embedder.image_reader),
    )
    built = load_built_index(tmp_path / "i")
    got = np.stack([built.vectors[built.ids.index(d)] for d in doc_ids])
    np.testing.assert_allclose(got, want, atol=1e-5)
    assert built.fields(doc_ids[2])["image"] == corpus[2]["image"]  # the path is stored as written

    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"_id": "z1", "title": "hat", "image": ["x.png"]}) + "\n", encoding="utf-8")
    with pytest.raises(UserError, match="document 'z1': 'image' must be an image file's path"):
        build_index(model, bad, tmp_path / "j", verbose=False)
    assert not (tmp_path / "j").exists()

    (tmp_path / "images").symlink_to(data / "images")  # beside new.jsonl: its relative path resolves there
    new = tmp_path / "new.jsonl"
    new.write_text(json.dumps({"_id": "n1", "title": "red hat", "image": corpus[3]["image"]}) + "\n", "utf-8")
    update_index(tmp_path / "i", new, verbose=False)
    index = LiveIndex.open(tmp_path / "i")
    image = doc_images(
        {"n1": {"image": str(data / corpus[3]["image"])}}, ["n1"], 576, reader=image_file_embedder.image_reader
    )
    expected = image_file_embedder.encode_docs(["red hat"], images=image)
    np.testing.assert_allclose(index.delta.docs["n1"][2], expected[0], atol=1e-5)
    with pytest.raises(UserError, match="documents.0: this index's model reads image files"):
        index.upsert([{"_id": "n2", "title": "hat", "image": "/etc/passwd"}])


def test_dev_images_are_read_once_a_run(image_file_shop, tmp_path, monkeypatch):
    """The backbone is frozen, so the dev documents' files go through it once, not every epoch."""
    from deepseek_tf.train import callbacks, train

    calls = []

    def counted(*args, **kwargs):
        calls.append(1)
        return dev_images(*args, **kwargs)

    dev_images = callbacks.dev_images
    monkeypatch.setattr(callbacks, "dev_images", counted)
    data, weights, _ = image_file_shop
    overrides = [f"data.dataset={data}", *MULTIMODAL_TINY, *image_file_settings(weights)]
    overrides += ["train.epochs=2", "data.dev_fraction=0.3", "train.batch_size=2"]
    history = train(load_config(MULTIMODAL_CONFIG, overrides), tmp_path / "run", verbose=0)
    assert len(history["dev_ndcg@10"]) == 2  # evaluated after each epoch
    assert len(calls) == 1
