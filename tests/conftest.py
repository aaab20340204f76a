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
