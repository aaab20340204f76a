"""Loading a trained `model/` dir (model.keras + vocab.txt or SentencePiece files + config.yaml) and
fingerprinting weights."""

from __future__ import annotations

import hashlib
from pathlib import Path

import keras

from deepseek_tf.config import load_config
from deepseek_tf.errors import UserError
from deepseek_tf.text.sentencepiece import SentencePieceTokenizer, has_sentencepiece
from deepseek_tf.text.tokenizer import Tokenizer


def weights_fingerprint(path: Path) -> str:
    """Hash of every byte of a model: one model file, or every file under a model dir (weights,
    vocabulary, tokenizer, config: a prefix or a vocabulary change alters the vectors as surely
    as a weight does). An index built with another model is refused, a teacher's cached scores
    are not reused for another teacher."""
    path = Path(path)
    h = hashlib.sha256()
    files = [path] if path.is_file() else sorted(f for f in path.rglob("*") if f.is_file())
    for f in files:
        h.update(f.relative_to(path).as_posix().encode() if f != path else f.name.encode())
        h.update(b"\0" + str(f.stat().st_size).encode() + b"\0")
        with f.open("rb") as fh:
            while chunk := fh.read(1 << 20):
                h.update(chunk)
    return h.hexdigest()[:16]


EXPORT_META = "deepseek_export.json"  # written last into an export, so its presence marks a finished one


def refuse_unfinished(path: Path, what: str = "--model") -> None:
    """Writers build `X.tmp` and rename it to `X` when done: a `.tmp` left behind is a killed or
    failed write whose files may look complete, so it is never loaded."""
    if Path(path).name.endswith(".tmp"):
        raise UserError(
            f"{what} {path}: an unfinished write (a killed or failed export/training left "
            f"this .tmp behind); use the finished directory or run it again"
        )


def load_exported_saved_model(path: Path, what: str = "--model"):
    """An exported SavedModel dir of ours -> the tf.saved_model.load object.

    Refuses a dir without deepseek_export.json (an export killed before it finished) and
    imports tensorflow_text first: the graph's tokenizer ops (FastBertNormalize, ...) are
    registered by that import, and loading without it fails with "Op type not registered".
    """
    import tensorflow as tf
    import tensorflow_text  # noqa: F401  (registers the tokenizer ops the graph holds)

    path = Path(path)
    refuse_unfinished(path, what)
    if not (path / EXPORT_META).is_file():
        raise UserError(f"{what} {path}: SavedModel has no {EXPORT_META} (not a finished deepseek_tf export)")
    try:
        return tf.saved_model.load(str(path))
    except Exception as e:  # corrupt protobuf / variables: TensorFlow raises assorted types
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise UserError(f"{what} {path}: cannot load the SavedModel (corrupt or truncated? {first})") from None


def load_trained(path: Path):
    """A trained `model/` dir -> (keras model, Tokenizer, Config)."""
    import zipfile

    import deepseek_tf.models  # noqa: F401  (registers the serializable classes)

    refuse_unfinished(path)
    config = load_config(path / "config.yaml")
    if has_sentencepiece(path):
        tokenizer = SentencePieceTokenizer.from_dir(path)
    else:
        tokenizer = Tokenizer.from_file(path / "vocab.txt", config.model.lowercase)
    tokenizer.set_prefixes(config.model.query_prefix, config.model.doc_prefix)
    # Keras reports any unreadable archive as "File not found", which misleads when the file is there.
    if not zipfile.is_zipfile(path / "model.keras"):
        raise UserError(f"{path}/model.keras: corrupt or truncated (not a complete .keras zip archive)")
    try:
        model = keras.models.load_model(path / "model.keras", compile=False)
    except Exception as e:
        raise UserError(f"{path}/model.keras: cannot load ({str(e).splitlines()[0]})") from None
    return model, tokenizer, config
