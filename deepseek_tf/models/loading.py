"""Loading a trained `model/` dir (model.keras + vocab.txt + config.yaml) and fingerprinting weights."""
from __future__ import annotations

import hashlib
from pathlib import Path

import keras

from deepseek_tf.config import load_config
from deepseek_tf.errors import UserError
from deepseek_tf.text.tokenizer import Tokenizer


def weights_fingerprint(path: Path) -> str:
    """Hash of a model dir's weight files (or of one model file): an index built with other
    weights is refused, a teacher's cached scores are not reused for another teacher."""
    h = hashlib.sha256()
    for f in [path] if path.is_file() else sorted(path.rglob("*")):
        if f.is_file() and f.suffix in (".keras", ".pb", ".index", ".tflite", ".txt") or "variables.data" in f.name:
            h.update(f.name.encode())
            h.update(str(f.stat().st_size).encode())
            with f.open("rb") as fh:
                h.update(fh.read(1 << 20))
    return h.hexdigest()[:16]


def load_trained(path: Path):
    """A trained `model/` dir -> (keras model, Tokenizer, Config)."""
    import deepseek_tf.models  # noqa: F401  (registers the serializable classes)

    config = load_config(path / "config.yaml")
    tokenizer = Tokenizer.from_file(path / "vocab.txt", config.model.lowercase)
    try:
        model = keras.models.load_model(path / "model.keras", compile=False)
    except Exception as e:
        raise UserError(f"{path}/model.keras: cannot load ({str(e).splitlines()[0]})") from None
    return model, tokenizer, config
