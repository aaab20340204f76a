"""Exports of a model that reads documents' image files: the SavedModel's encode_image endpoint and
PREFIX.image.tflite carry the backbone, so an export turns the corpus's files into the same
document vectors as the Keras model; an export without it refuses documents instead of giving
each the placeholder."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from conftest import run_cli_here
from test_image_files import run, shop  # noqa: F401  (module-scoped fixtures: the tiny image-file model)

from deepseek_tf.data import doc_images, load_beir
from deepseek_tf.errors import UserError
from deepseek_tf.export.tflite import TOLERANCES, compare
from deepseek_tf.retrieval.artifacts import load_embedder

DIM = 576  # MobileNetV3Small's pooled width


@pytest.fixture(scope="module")
def trained(run, shop) -> dict:  # noqa: F811  (the fixtures imported above)
    """The tiny image-file model's dir and its BEIR data (image files under data/images)."""
    return {"model": run / "model", "data": shop[0]}


@pytest.fixture(scope="module")
def exports(trained, tmp_path_factory):
    """{"saved_model": DIR, "none": PREFIX.query.tflite, "float16": ...}, exported through the CLI once."""
    out, model = tmp_path_factory.mktemp("exports"), str(trained["model"])
    rows = {
        "saved_model": ["--format", "saved_model", "--output", str(out / "sm")],
        "none": ["--format", "tflite", "--output", str(out / "f32")],
        "float16": ["--format", "tflite", "--quantize", "float16", "--output", str(out / "f16")],
    }
    for name, args in rows.items():
        result = run_cli_here("deepseek_tf.export", "--model", model, *args)
        assert result.returncode == 0, (name, result.stderr)
        if name != "saved_model":  # one line per file written, the image tower's with its check
            assert f"{args[-1]}.image.tflite (" in result.stdout, result.stdout
    return {"saved_model": out / "sm", "none": out / "f32.query.tflite", "float16": out / "f16.query.tflite"}


def documents(data, embedder) -> tuple[list[str], tuple[np.ndarray, np.ndarray]]:
    """The corpus's texts and their image files read through EMBEDDER's image_reader."""
    ds = load_beir(data, "test")
    doc_ids = sorted(ds.corpus)
    images = doc_images(ds.corpus, doc_ids, DIM, warn=False, reader=embedder.image_reader)
    return [ds.doc_text(d) for d in doc_ids], images


def parity(trained, path) -> tuple[dict, dict]:
    """(image vectors' figures, document vectors' figures): the export at PATH against Keras, each
    reading the corpus's image files through its own image_reader."""
    keras_embedder, exported = load_embedder(str(trained["model"])), load_embedder(str(path))
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


def test_saved_model_reads_image_files_as_keras(trained, exports):
    meta = json.loads((exports["saved_model"] / "deepseek_export.json").read_text())
    assert meta["image_size"] == 32 and meta["checks"]["image_max_abs_diff"] <= meta["tolerance"]
    images, docs = parity(trained, exports["saved_model"])
    assert images["min_cosine"] >= 0.999 and docs["min_cosine"] >= 0.999, (images, docs)
    assert docs["max_abs_diff"] <= meta["tolerance"], docs


def test_tflite_float32_reads_image_files_as_keras(trained, exports):
    query = exports["none"]
    meta = json.loads(query.with_suffix(".json").read_text())
    image_file = query.with_name(meta["tower_files"]["image"])
    assert image_file.name == "f32.image.tflite" and image_file.is_file()
    assert json.loads(image_file.with_suffix(".json").read_text())["tower"] == "image"
    assert meta["image_size"] == 32 and meta["checks"]["image"]["passed"]
    images, docs = parity(trained, query)
    assert images["min_cosine"] >= 0.999 and docs["min_cosine"] >= 0.999, (images, docs)
    assert docs["max_abs_diff"] <= TOLERANCES["none"][1], docs


def test_tflite_float16_reads_image_files_within_its_tolerance(trained, exports):
    bound = TOLERANCES["float16"][1]
    check = json.loads(exports["float16"].with_suffix(".json").read_text())["checks"]["image"]
    assert check["check"] == "min_cosine" and check["worst"] >= bound, check
    images, docs = parity(trained, exports["float16"])
    assert images["min_cosine"] >= bound and docs["min_cosine"] >= bound, (images, docs)


def test_int8_calibrates_on_the_corpus_images_and_is_checked(trained, tmp_path):
    """int8 calibrates the image backbone on the dataset's image files (all 10 on disk), and is
    checked like any tower: this untrained 32-px backbone loses the image in 8-bit activations
    (cosine ~0.1), so nothing is written; a corpus without image files is refused up front."""
    from deepseek_tf.data.image_files import load_image
    from deepseek_tf.export.image_tower import dataset_pixels
    from deepseek_tf.export.tflite import calibration_texts

    calibration = calibration_texts(trained["data"])
    files = [path for _, path in calibration["image_files"]]
    assert sorted(files) == sorted(str(p) for p in trained["data"].glob("images/*.png")) and len(files) == 10
    pixels = dataset_pixels(calibration, 32)
    assert pixels.shape == (10, 32, 32, 3)
    np.testing.assert_array_equal(pixels[3], load_image(files[3], 32).numpy())

    export = ["--model", str(trained["model"]), "--format", "tflite", "--quantize", "int8"]
    result = run_cli_here(
        "deepseek_tf.export", *export, "--dataset", str(trained["data"]), "--output", str(tmp_path / "q")
    )
    assert result.returncode == 1 and result.stderr.count("\n") == 1, result.stderr
    assert result.stderr.startswith("error: export check failed: image tower (int8) min_cosine"), result.stderr
    assert list(tmp_path.iterdir()) == []
    no_files = tmp_path / "text_only"
    shutil.copytree(trained["data"], no_files, ignore=shutil.ignore_patterns("images"))
    result = run_cli_here("deepseek_tf.export", *export, "--dataset", str(no_files), "--output", str(tmp_path / "q"))
    assert result.returncode == 1 and "its corpus names none on disk" in result.stderr, result.stderr


def dense_metrics(stdout: str) -> list[str]:
    from deepseek_tf.evaluate.report import METRIC_KEYS

    row = next(line for line in stdout.splitlines() if line.startswith("| dense"))
    return row.split("|")[2 : 2 + len(METRIC_KEYS)]


def test_evaluate_runs_the_exports(trained, exports):
    """`evaluate --model EXPORT` reads the image files through the export: Keras's metrics exactly."""
    evaluate = lambda model: run_cli_here(
        "deepseek_tf.evaluate", "--model", str(model), "--dataset", str(trained["data"])
    )
    keras_result = evaluate(trained["model"])
    assert keras_result.returncode == 0, keras_result.stderr
    for name in ("saved_model", "none"):
        result = evaluate(exports[name])
        assert result.returncode == 0, result.stderr
        assert dense_metrics(result.stdout) == dense_metrics(keras_result.stdout), result.stdout


def test_an_export_without_the_backbone_refuses_documents(trained, exports, tmp_path):
    """An export made before the backbone was carried (tower_files without "image"): `evaluate` stops
    with one line instead of giving every document the placeholder; queries still encode."""
    for suffix in ("query", "doc"):
        source = exports["none"].with_name(f"f32.{suffix}.tflite")
        shutil.copy(source, tmp_path / source.name)
        meta = json.loads(source.with_suffix(".json").read_text())
        meta["tower_files"].pop("image")
        (tmp_path / source.name).with_suffix(".json").write_text(json.dumps(meta))
    old = tmp_path / "f32.query.tflite"
    result = run_cli_here("deepseek_tf.evaluate", "--model", str(old), "--dataset", str(trained["data"]))
    assert result.returncode != 0 and "Traceback" not in result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert "mobilenet_v3_small backbone, which this export does not carry" in last, result.stderr
    embedder = load_embedder(str(old))
    assert embedder.encode_queries(["red shirt"]).shape == (1, 16)
    with pytest.raises(UserError, match="export the trained model again"):
        embedder.encode_docs(["a shirt"], images=(np.zeros((1, DIM), np.float32), np.ones(1, np.float32)))

    saved = load_embedder(str(exports["saved_model"]))
    saved.image_reader = None  # as a SavedModel without encode_image loads
    with pytest.raises(UserError, match="does not carry"):
        saved.encode_docs(["a shirt"], images=(np.zeros((1, DIM), np.float32), np.ones(1, np.float32)))


def test_report_refuses_image_models(trained, tmp_path):
    from deepseek_tf.export.quantization import quantization_report

    with pytest.raises(UserError, match="--report measures text-only towers"):
        quantization_report(str(trained["model"]), str(trained["data"]), str(tmp_path / "r"))
