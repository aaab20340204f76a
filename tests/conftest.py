import os
import sys
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")
# Each load of a Keras model under the default engine converts it to OpenVINO (seconds); the suite
# loads dozens, in process and in CLI subprocesses, so it runs Keras. test_openvino_engine.py
# tests the default engine (with the variable removed) and its wiring into the commands.
os.environ["DEEPSEEK_TF_ENGINE"] = "keras"
sys.path.insert(0, str(Path(__file__).parent))

import pytest  # noqa: E402
from fixtures import write_tiny_beir  # noqa: E402

import deepseek_tf  # noqa: E402,F401  (before any TensorFlow import: it sets the TF environment the CLIs run with)

ROOT = Path(__file__).resolve().parents[1]
CRANFIELD = ROOT.parent / "shared" / "data" / "cranfield"


@pytest.fixture(scope="session")
def tiny_beir(tmp_path_factory) -> Path:
    return write_tiny_beir(tmp_path_factory.mktemp("data") / "tiny_beir")


@pytest.fixture(scope="session")
def tiny_run(tiny_beir, tmp_path_factory) -> Path:
    """A tiny dual encoder trained once for the whole session (configs/tiny.yaml)."""
    from deepseek_tf.config import load_config
    from deepseek_tf.train import train

    workdir = tmp_path_factory.mktemp("run")
    config = load_config(ROOT / "configs" / "tiny.yaml", [f"data.dataset={tiny_beir}"])
    train(config, workdir, verbose=0)
    return workdir


@pytest.fixture(scope="session")
def tiny_ce_run(tiny_beir, tmp_path_factory) -> Path:
    """A tiny cross-encoder trained once for the whole session (configs/cross_encoder_tiny.yaml):
    the reranker of the evaluate/search/serve tests, the distillation teacher, a --rerank input.
    Read-only: a test that changes it works on a copy."""
    from deepseek_tf.config import load_config
    from deepseek_tf.train import train

    workdir = tmp_path_factory.mktemp("ce_run")
    train(load_config(ROOT / "configs" / "cross_encoder_tiny.yaml", [f"data.dataset={tiny_beir}"]), workdir, verbose=0)
    return workdir


@pytest.fixture(scope="session")
def tiny_saved_model(tiny_run, tmp_path_factory) -> Path:
    """tiny_run's model exported once as a SavedModel (read-only)."""
    from deepseek_tf.export.saved_model import export_saved_model

    out = tmp_path_factory.mktemp("tiny_sm") / "sm"
    export_saved_model(tiny_run / "model", out)
    return out


@pytest.fixture(scope="session")
def tiny_index(tiny_run, tiny_beir, tmp_path_factory) -> Path:
    """An exact index of tiny_beir's corpus by tiny_run's model, built once (read-only)."""
    from deepseek_tf.index import build_index

    out = tmp_path_factory.mktemp("tiny_index") / "index"
    build_index(str(tiny_run / "model"), tiny_beir / "corpus.jsonl", out, verbose=False)
    return out


def run_cli(module: str, *args: str):
    """Runs `python -m module args` and returns the CompletedProcess (text mode)."""
    import subprocess

    return subprocess.run(
        [sys.executable, "-m", module, *args],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )


def run_cli_here(module: str, *args: str):
    """`python -m module args` in this process (what a subprocess would return: exit code, stdout,
    stderr), for tables of CLI rows: a fresh interpreter per row pays TensorFlow's import each
    time. A row that needs a process of its own (limits, signals, a fresh start) uses `run_cli`.
    An exception escaping the command is returned as its traceback on stderr with exit code 1."""
    import contextlib
    import io
    import runpy
    import subprocess
    import traceback

    out, err, saved = io.StringIO(), io.StringIO(), sys.argv
    sys.argv = [module, *args]
    code = 0
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            runpy.run_module(module, run_name="__main__", alter_sys=False)
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
        if isinstance(e.code, str):
            err.write(e.code + "\n")
    except BaseException:
        err.write(traceback.format_exc())
        code = 1
    finally:
        sys.argv = saved
    return subprocess.CompletedProcess([module, *args], code, out.getvalue(), err.getvalue())


# --- multimodal: the tiny text + image models of test_multimodal*.py, test_image_files.py and
# test_image_export.py, each built once a session (read-only: a test that changes one works on a copy)

MULTIMODAL_CONFIG = ROOT / "configs" / "products_multimodal.yaml"
MULTIMODAL_TINY = [  # 8-d image vectors, 4 pairs a batch, one step
    "model.image_dim=8",
    "model.hidden_dim=16",
    "model.intermediate_dim=32",
    "train.batch_size=4",
    "train.epochs=1",
    "train.steps_per_epoch=1",
]
IMAGE_SIZE = 32  # the image-file model's backbone input side


def image_file_settings(weights: Path) -> list[str]:
    """The overrides that make MULTIMODAL_TINY read image files through MobileNetV3Small (WEIGHTS)."""
    return [
        "model.image_backbone=mobilenet_v3_small",
        f"model.image_weights={weights}",
        f"model.image_size={IMAGE_SIZE}",
        "model.image_dim=576",
    ]


@pytest.fixture(scope="session")
def image_vector_shop(tmp_path_factory) -> tuple[Path, list[dict]]:
    """(BEIR dir, corpus records): 18 generated products with 8-d `image_embedding`s, 3 without one."""
    from deepseek_tf.bench.catalogue import catalogue, write_beir

    corpus, queries, qrels = catalogue(seed=1, types=3, colours=3, per_combo=2, image_dim=8, missing=0.25)
    return write_beir(tmp_path_factory.mktemp("image_vector_shop"), corpus, queries, qrels), corpus


@pytest.fixture(scope="session")
def image_vector_run(image_vector_shop, tmp_path_factory) -> Path:
    """configs/products_multimodal.yaml (MULTIMODAL_TINY) trained on image_vector_shop: its workdir."""
    from deepseek_tf.config import load_config
    from deepseek_tf.train import train

    workdir = tmp_path_factory.mktemp("image_vector_run")
    config = load_config(MULTIMODAL_CONFIG, [f"data.dataset={image_vector_shop[0]}", *MULTIMODAL_TINY])
    train(config, workdir, verbose=0)
    return workdir


@pytest.fixture(scope="session")
def image_file_shop(tmp_path_factory) -> tuple[Path, Path, list[dict]]:
    """(BEIR dir, backbone weights file, corpus records): 12 products whose images are PNG files of
    their colour under DIR/images (bench.catalogue_files), the first without an image and the
    second naming a file that is not there; the weights' BatchNorm statistics come from the files."""
    from deepseek_tf.bench.catalogue import catalogue, write_beir
    from deepseek_tf.bench.catalogue_files import backbone_weights, colours, with_image_files

    root = tmp_path_factory.mktemp("image_file_shop")
    corpus, queries, qrels = catalogue(seed=1, types=2, colours=3, per_combo=2, image_dim=8)
    records, pixels = with_image_files(corpus, colours(qrels), root / "data")
    for record in records[:2]:
        (root / "data" / record["image"]).unlink()
    del records[0]["image"]
    data = write_beir(root / "data", records, queries, qrels)
    return data, backbone_weights(root / "mobilenet_v3_small.weights.h5", pixels, IMAGE_SIZE), records


@pytest.fixture(scope="session")
def image_file_run(image_file_shop, tmp_path_factory) -> Path:
    """MULTIMODAL_TINY reading image_file_shop's files (image_file_settings), trained: its workdir."""
    from deepseek_tf.config import load_config
    from deepseek_tf.train import train

    data, weights, _ = image_file_shop
    workdir = tmp_path_factory.mktemp("image_file_run")
    overrides = [f"data.dataset={data}", *MULTIMODAL_TINY, *image_file_settings(weights)]
    train(load_config(MULTIMODAL_CONFIG, overrides), workdir, verbose=0)
    return workdir


@pytest.fixture(scope="session")
def image_file_embedder(image_file_run):
    """image_file_run's model loaded once (read-only)."""
    from deepseek_tf.retrieval.artifacts import load_embedder

    return load_embedder(str(image_file_run / "model"))


def reuse_embedders(monkeypatch, loaded: dict) -> None:
    """`load_embedder(spec)` answers with LOADED[spec] ({model path: its embedder, loaded once: a
    load takes a second or more, an image backbone's several}) and loads any other spec as ever."""
    from deepseek_tf.retrieval import artifacts

    load, by_path = artifacts.load_embedder, {Path(p).resolve(): e for p, e in loaded.items()}

    def reused(spec, *args, **kwargs):
        path = Path(spec).resolve()
        return by_path[path] if path in by_path else load(spec, *args, **kwargs)

    monkeypatch.setattr(artifacts, "load_embedder", reused)


# --- end of the multimodal block


# --- bad input and data safety (test_bad_input*.py, test_data_safety_*.py): exports and an index of
# the tiny models, each made once a session (read-only: a row copies what it changes)

pytest.register_assert_rewrite("data_safety_rows")  # check_nothing_lost: pytest's assertion messages


@pytest.fixture(scope="session")
def tiny_tflite(tiny_run, tmp_path_factory) -> Path:
    """tiny_run's model exported once as TFLite towers: the query tower's PREFIX.query.tflite."""
    from deepseek_tf.export.towers import export_tflite

    result = export_tflite(tiny_run / "model", tmp_path_factory.mktemp("exports") / "tiny")
    return Path(result["paths"]["query"])


@pytest.fixture(scope="session")
def tiny_ce_tflite(tiny_ce_run, tmp_path_factory) -> Path:
    """tiny_ce_run's cross-encoder exported once as TFLite: its PREFIX.tflite."""
    from deepseek_tf.export.towers import export_tflite

    return Path(export_tflite(tiny_ce_run / "model", tmp_path_factory.mktemp("ce_tflite") / "ce")["paths"]["score"])


@pytest.fixture(scope="session")
def tiny_sharded_index(tiny_run, tiny_beir, tmp_path_factory) -> Path:
    """Like tiny_index, built with --shard-size 5: a finished exact index of 24 documents in 5 shards."""
    from deepseek_tf.index import build_index

    out = tmp_path_factory.mktemp("safety") / "idx"
    build_index(str(tiny_run / "model"), tiny_beir / "corpus.jsonl", out, shard_size=5, verbose=False)
    return out
