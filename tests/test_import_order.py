"""TensorFlow's oneDNN kernels (up to 2x faster on CPUs where TensorFlow leaves them off) are
decided once, when TensorFlow loads. Each case runs in a fresh interpreter and checks which
kernels are on, and what the user is told, for one import order."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

PROBE = "from tensorflow.python.util import _pywrap_util_port as p; print('onednn', p.IsMklEnabled())"


def run(code: str, **env: str) -> subprocess.CompletedProcess:
    base = {k: v for k, v in os.environ.items() if k != "TF_ENABLE_ONEDNN_OPTS"}
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env={**base, "TF_CPP_MIN_LOG_LEVEL": "3", **env}
    )


def test_importing_deepseek_tf_first_turns_onednn_on():
    done = run(f"import deepseek_tf, tensorflow\n{PROBE}")
    assert done.returncode == 0, done.stderr
    assert "onednn True" in done.stdout and "RuntimeWarning" not in done.stderr


@pytest.mark.parametrize("opt_out", [False, True])
def test_tensorflow_first_with_onednn_off_is_said_once(opt_out):
    """TensorFlow loaded with oneDNN off (as it does by default on AVX2-only CPUs; forced here
    with TF_ENABLE_ONEDNN_OPTS=0 at load, then the variable removed unless the user opted out)."""
    keep = "" if opt_out else "import os; os.environ.pop('TF_ENABLE_ONEDNN_OPTS')\n"
    code = f"import tensorflow\n{keep}import deepseek_tf\nimport deepseek_tf.retrieval\n{PROBE}"
    done = run(code, TF_ENABLE_ONEDNN_OPTS="0")
    assert done.returncode == 0, done.stderr
    assert "onednn False" in done.stdout
    warned = done.stderr.count("imported before deepseek_tf with its oneDNN kernels off")
    assert warned == (0 if opt_out else 1), done.stderr
    if not opt_out:
        assert "TF_ENABLE_ONEDNN_OPTS=1" in done.stderr and "Import deepseek_tf first" in done.stderr


def test_embedders_name_their_engine(tiny_run):
    from deepseek_tf.retrieval.artifacts import load_embedder

    engine = load_embedder(str(tiny_run / "model"), engine="keras").engine
    assert engine.startswith("Keras float32") and "oneDNN on" in engine


def test_tensorflow_first_with_onednn_off_still_encodes_on_fast_kernels(tiny_run):
    """The default engine does not run on TensorFlow's kernels: with TensorFlow loaded first and
    oneDNN off, a Keras model still encodes on OpenVINO's JIT kernels (not its reference ones)."""
    code = (
        "import tensorflow\nimport deepseek_tf\n"
        "from deepseek_tf.retrieval.artifacts import load_embedder\n"
        f"e = load_embedder({str(tiny_run / 'model')!r})\n"
        "print('engine', e.engine)\n"
        "print('kernels', e._padded['doc'].kernels())\n"  # noqa: SLF001 (no public view of the kernels)
        f"{PROBE}"
    )
    base = {k: v for k, v in os.environ.items() if k != "DEEPSEEK_TF_ENGINE"}
    done = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        env={**base, "TF_CPP_MIN_LOG_LEVEL": "3", "TF_ENABLE_ONEDNN_OPTS": "0"},
    )
    assert done.returncode == 0, done.stderr
    assert "onednn False" in done.stdout
    assert "engine OpenVINO" in done.stdout, done.stdout
    kernels = eval(done.stdout.split("kernels ", 1)[1].splitlines()[0])
    matmuls = [v for k, v in kernels.items() if k in ("FullyConnected", "MatMul")]
    assert matmuls and all("ref" not in v for v in matmuls), kernels
