"""The cross-encoder a service runs: a trained `model/` dir is served through its dynamic-int8
TFLite export (`RUN/tflite/rerank_int8.tflite`), made once in a child process, verified against
the Keras model and reused while the model's bytes are unchanged.

On QBQTC dev the int8 file ranks within 0.001 nDCG@10 of Keras and reranks 30 candidates in
165 ms p50 against 407 ms on 2 cores (docs/results.md, Reranker export and latency).
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

# --rerank-runtime: how a trained model/ dir is served (an explicit SavedModel or .tflite is used as given)
RERANK_RUNTIMES = {
    "int8": "its verified dynamic-int8 TFLite export (made once into RUN/tflite/)",
    "keras": "the Keras model itself",
}
DEFAULT_RERANK_RUNTIME = "int8"
INT8_PREFIX = Path("tflite") / "rerank_int8"  # under the run dir, beside model/


def int8_path(model_dir: str | Path) -> Path:
    """Where the int8 export of RUN/model lives: RUN/tflite/rerank_int8.tflite."""
    return Path(model_dir).resolve().parent / INT8_PREFIX.with_suffix(".tflite")


def _is_cross_encoder_dir(path: Path) -> bool:
    if not ((path / "model.keras").is_file() and (path / "config.yaml").is_file()):
        return False
    from deepseek_tf.config import load_config

    return load_config(path / "config.yaml").model.kind == "cross_encoder"


def current_int8(model_dir: str | Path) -> Path | None:
    """The int8 export of this model dir when it exists, passed its check and was made from
    these exact bytes (the fingerprint it records), else None."""
    from deepseek_tf.models.loading import weights_fingerprint  # keras: not at import, `serve --help` stays quick
    from deepseek_tf.retrieval.tflite import meta_path

    target = int8_path(model_dir)
    try:
        meta = json.loads(meta_path(target).read_text())
    except (OSError, ValueError):
        return None
    fresh = meta.get("source_fingerprint") == weights_fingerprint(Path(model_dir))
    return target if target.is_file() and meta.get("checks_passed") and fresh else None


def serving_reranker(spec: str, runtime: str = DEFAULT_RERANK_RUNTIME, say: Callable[[str], None] = print) -> str:
    """The file `serve --rerank SPEC` loads: SPEC itself, or for a trained cross-encoder dir with
    runtime "int8" its int8 export (exported now when missing or stale). A failed export is
    reported and the Keras model served instead: slower, never wrong."""
    path = Path(spec)
    if runtime == "keras" or not _is_cross_encoder_dir(path):
        return spec
    found = current_int8(path)
    if found is None:
        target = int8_path(path)
        say(f"exporting {spec} to {target} (int8 TFLite, once per model; --rerank-runtime keras skips it)")
        # a child process: the Keras model and the converter's memory go back when it exits
        command = [sys.executable, "-m", "deepseek_tf.export", "--model", str(path), "--format", "tflite"]
        command += ["--quantize", "dynamic", "--output", str(target.with_suffix(""))]
        done = subprocess.run(command, capture_output=True, text=True)
        found = current_int8(path) if done.returncode == 0 else None
        if found is None:
            why = (done.stderr.strip().splitlines() or [f"exit {done.returncode}"])[-1]
            say(f"warning: int8 export of {spec} failed ({why}); reranking with the Keras model")
            return spec
    say(f"reranking with {found} (int8 TFLite of {spec}; --rerank-runtime keras for the Keras model)")
    return str(found)
