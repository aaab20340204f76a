"""Exports of a model that reads documents' image files: the SavedModel's encode_image endpoint and
PREFIX.image.tflite carry the backbone, so an export turns the corpus's files into the same
document vectors as the Keras model; an export without it refuses documents instead of giving
each the placeholder. The model is conftest's image_file_run (12 products, 10 image files on disk)."""

from __future__ import annotations

import copy
import json
import shutil

import numpy as np
import pytest
from conftest import IMAGE_SIZE, reuse_embedders, run_cli_here

from deepseek_tf.data import doc_images, load_beir
from deepseek_tf.errors import UserError
from deepseek_tf.export.tflite import TOLERANCES, compare
from deepseek_tf.retrieval.artifacts import load_embedder

DIM = 576  # MobileNetV3Small's pooled width


@pytest.fixture(scope="module")
def trained(image_file_run, image_file_shop, image_file_embedder) -> dict:
    """The tiny image-file model's dir, its BEIR data (image files under data/images) and its
    Keras embedder (read-only)."""
    return {"model": image_file_run / "model", "data": image_file_shop[0], "keras": image_file_embedder}


@pytest.fixture(scope="module")
def exports(trained, tmp_path_factory) -> dict:
    """{"saved_model": DIR, "tflite": PREFIX.query.tflite (float32), "written": export_tflite's
    answer}, each exported once (read-only)."""
    from deepseek_tf.export.saved_model import export_saved_model
    from deepseek_tf.export.towers import export_tflite

    out = tmp_path_factory.mktemp("exports")
    export_saved_model(trained["model"], out / "sm")
    written = export_tflite(str(trained["model"]), out / "f32")
    return {"saved_model": out / "sm", "tflite": out / "f32.query.tflite", "written": written}


@pytest.fixture(scope="module")
def loaded(exports) -> dict:
    """{"saved_model": its embedder, "tflite": ...}: each export loaded once (read-only)."""
    return {name: load_embedder(str(exports[name])) for name in ("saved_model", "tflite")}


def documents(data, embedder) -> tuple[list[str], tuple[np.ndarray, np.ndarray]]:
    """The corpus's texts and their image files read through EMBEDDER's image_reader."""
    ds = load_beir(data, "test")
    doc_ids = sorted(ds.corpus)
    images = doc_images(ds.corpus, doc_ids, DIM, warn=False, reader=embedder.image_reader)
    return [ds.doc_text(d) for d in doc_ids], images


def parity(trained, exported) -> tuple[dict, dict]:
    """(image vectors' figures, document vectors' figures): the EXPORTED embedder against Keras,
    each reading the corpus's image files through its own image_reader."""
    keras_embedder = trained["keras"]
    assert exported.image_reader is not None and exported.image_reader.dim == DIM
    texts, want_images = documents(trained["data"], keras_embedder)
    _, got_images = documents(trained["data"], exported)
    present = want_images[1] == 1
    assert got_images[1].tolist() == want_images[1].tolist() and 0 < present.sum() < len(texts)
    images = compare(want_images[0][present], got_images[0][present])
    docs = compare(
        keras_embedder.encode_docs(texts, images=want_images), exported.encode_docs(texts, images=got_images)
    )
    return images, docs


def test_saved_model_reads_image_files_as_keras(trained, exports, loaded):
    meta = json.loads((exports["saved_model"] / "deepseek_export.json").read_text())
    assert meta["image_size"] == IMAGE_SIZE and meta["checks"]["image_max_abs_diff"] <= meta["tolerance"]
    images, docs = parity(trained, loaded["saved_model"])
    assert images["min_cosine"] >= 0.999 and docs["min_cosine"] >= 0.999, (images, docs)
    assert docs["max_abs_diff"] <= meta["tolerance"], docs


def test_tflite_float32_reads_image_files_as_keras(trained, exports, loaded):
    query = exports["tflite"]
    written = exports["written"]  # one file per tower, the image tower's with its check
    assert written["paths"]["image"] == str(query.with_name("f32.image.tflite")) and written["checks"]["image"]
    meta = json.loads(query.with_suffix(".json").read_text())
    image_file = query.with_name(meta["tower_files"]["image"])
    assert image_file.name == "f32.image.tflite" and image_file.is_file()
    assert json.loads(image_file.with_suffix(".json").read_text())["tower"] == "image"
    assert meta["image_size"] == IMAGE_SIZE and meta["checks"]["image"]["passed"]
    images, docs = parity(trained, loaded["tflite"])
    assert images["min_cosine"] >= 0.999 and docs["min_cosine"] >= 0.999, (images, docs)
    assert docs["max_abs_diff"] <= TOLERANCES["none"][1], docs


def test_int8_calibrates_on_the_corpus_images_and_is_checked(trained, exports, tmp_path):
    """int8 calibrates the image backbone on the dataset's image files (all 10 on disk), and is
    checked like any tower: this untrained 32-px backbone loses the image in 8-bit activations
    (cosine ~0.3), so the tower is refused (converted from the SavedModel export's encode_image,
    as export_tflite converts it before any file is written); a corpus without image files is
    refused up front."""
    from deepseek_tf.data.image_files import load_image
    from deepseek_tf.export.image_tower import convert_image_tower, dataset_pixels
    from deepseek_tf.export.tflite import calibration_texts
    from deepseek_tf.export.towers import export_tflite

    calibration = calibration_texts(trained["data"])
    files = [path for _, path in calibration["image_files"]]
    assert sorted(files) == sorted(str(p) for p in trained["data"].glob("images/*.png")) and len(files) == 10
    pixels = dataset_pixels(calibration, IMAGE_SIZE)
    assert pixels.shape == (10, IMAGE_SIZE, IMAGE_SIZE, 3)
    np.testing.assert_array_equal(pixels[3], load_image(files[3], IMAGE_SIZE).numpy())

    reader = trained["keras"].image_reader
    with pytest.raises(UserError) as e:
        convert_image_tower(exports["saved_model"], reader, "int8", calibration)
    assert str(e.value).startswith("export check failed: image tower (int8) min_cosine") and "\n" not in str(e.value)
    no_files = tmp_path / "text_only"
    shutil.copytree(trained["data"], no_files, ignore=shutil.ignore_patterns("images"))
    with pytest.raises(UserError, match="its corpus names none on disk"):
        export_tflite(str(trained["model"]), tmp_path / "q", "int8", str(no_files))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["text_only"]


def test_evaluate_reads_the_image_files_through_each_model(trained, exports, loaded, capsys, monkeypatch):
    """`evaluate` reads the image files through the Keras model (the documents without one counted
    in a warning) and through each export (`evaluate --model EXPORT`): Keras's metrics exactly."""
    from deepseek_tf.evaluate.report import METRIC_KEYS, evaluate

    data = str(trained["data"])
    reuse_embedders(monkeypatch, {trained["model"]: trained["keras"], exports["saved_model"]: loaded["saved_model"]})
    metrics = lambda results: [f"{results['dense'][key]:.4f}" for key in METRIC_KEYS]  # as the table shows them
    want = metrics(evaluate(str(trained["model"]), data))
    assert "documents have no image file" in capsys.readouterr().err
    assert metrics(evaluate(str(exports["saved_model"]), data, verbose=False)) == want
    result = run_cli_here("deepseek_tf.evaluate", "--model", str(exports["tflite"]), "--dataset", data)
    assert result.returncode == 0, result.stderr
    row = next(line for line in result.stdout.splitlines() if line.startswith("| dense"))
    assert [cell.strip() for cell in row.split("|")[2 : 2 + len(METRIC_KEYS)]] == want, result.stdout
    assert "documents have no image file" in result.stderr


def test_an_export_without_the_backbone_refuses_documents(trained, exports, loaded, tmp_path):
    """An export made before the backbone was carried (tower_files without "image"): `evaluate` stops
    with one line instead of giving every document the placeholder; queries still encode."""
    from deepseek_tf.evaluate.report import evaluate

    for suffix in ("query", "doc"):
        source = exports["tflite"].with_name(f"f32.{suffix}.tflite")
        shutil.copy(source, tmp_path / source.name)
        meta = json.loads(source.with_suffix(".json").read_text())
        meta["tower_files"].pop("image")
        (tmp_path / source.name).with_suffix(".json").write_text(json.dumps(meta))
    old = tmp_path / "f32.query.tflite"
    with pytest.raises(UserError) as e:
        evaluate(str(old), str(trained["data"]), verbose=False)
    assert "mobilenet_v3_small backbone, which this export does not carry" in str(e.value)
    assert "\n" not in str(e.value)
    embedder = load_embedder(str(old))
    assert embedder.encode_queries(["red shirt"]).shape == (1, 16)
    with pytest.raises(UserError, match="export the trained model again"):
        embedder.encode_docs(["a shirt"], images=(np.zeros((1, DIM), np.float32), np.ones(1, np.float32)))

    saved = copy.copy(loaded["saved_model"])
    saved.image_reader = None  # as a SavedModel without encode_image loads
    with pytest.raises(UserError, match="does not carry"):
        saved.encode_docs(["a shirt"], images=(np.zeros((1, DIM), np.float32), np.ones(1, np.float32)))
