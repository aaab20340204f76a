"""Publishing a checked export: metadata first, then an atomic swap into place.

An --output that already exists is replaced only when it is a previous export of ours
(its deepseek_export.json, or a .tflite file's .json metadata) or with `overwrite`: anything
else may be the user's own files, and deleting them is worse than refusing.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from deepseek_tf.errors import UserError, refuse_aliasing
from deepseek_tf.models.loading import EXPORT_META

# Written into every SavedModel export's metadata (and quoted in the README).
LOAD_NOTE = (
    "import tensorflow_text before tf.saved_model.load: the graph holds its tokenizer ops "
    "(FastBertNormalize, FastWordpieceTokenizeWithOffsets), which that import registers"
)


def _check_parent(output: Path) -> None:
    for parent in output.parents:  # the nearest existing ancestor must be a directory
        if parent.exists():
            if not parent.is_dir():
                raise UserError(f"--output {output}: {parent} is a file, not a directory")
            return


def check_not_model(model: str | Path, outputs: list[Path]) -> None:
    """Before anything is written: an export may not replace, hold or sit inside the model it
    exports (`--output run/model --overwrite` once deleted model.keras, config.yaml and vocab.txt)."""
    if Path(str(model)).exists():
        refuse_aliasing("--output", outputs, {"--model": [Path(str(model))]})


def _first_line(e: BaseException) -> str:
    text = str(getattr(e, "message", None) or getattr(e, "strerror", None) or e).strip()
    return text.splitlines()[0][:200] if text else type(e).__name__


@contextmanager
def removed_on_failure(tmp: Path) -> Iterator[Path]:
    """The block writes the directory `tmp`; on any failure it is removed (a left `.tmp` is an
    unfinished write that other commands refuse), and a failed write (a full disk, `ulimit -f`:
    TensorFlow's OutOfRangeError or an OSError, neither naming the file) is one line naming it."""
    try:
        yield tmp
    except UserError:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    except Exception as e:
        shutil.rmtree(tmp, ignore_errors=True)
        import tensorflow as tf

        if isinstance(e, OSError | tf.errors.OpError):
            raise UserError(f"{tmp}: cannot write the export ({_first_line(e)}); nothing written") from None
        raise
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def write_files(files: list[tuple[Path, bytes]]) -> None:
    """Writes every (target, data) to `target.tmp`, then renames them all into place: a failed
    write (a full disk, `ulimit -f`) removes what it wrote and names the file."""
    written: list[Path] = []
    try:
        for target, data in files:
            tmp = target.with_name(target.name + ".tmp")
            written.append(tmp)
            tmp.write_bytes(data)
    except OSError as e:
        for tmp in written:
            tmp.unlink(missing_ok=True)
        raise UserError(f"{written[-1]}: cannot write ({_first_line(e)}); nothing written") from None
    for (target, _), tmp in zip(files, written):
        tmp.replace(target)


def check_output_dir(output: str | Path, overwrite: bool = False) -> None:
    """Before any work: may a SavedModel export be written to directory `output`?"""
    output = Path(output)
    _check_parent(output)
    if output.name.endswith(".tmp"):
        raise UserError(f"--output {output}: names ending in .tmp are kept for unfinished writes")
    if overwrite or not output.exists() and not output.is_symlink():
        return
    if not output.is_dir():
        raise UserError(
            f"--output {output}: an existing file, not a directory; nothing written "
            f"(choose another path or pass --overwrite)"
        )
    if any(output.iterdir()) and not (output / EXPORT_META).is_file():
        raise UserError(
            f"--output {output}: directory is not empty and is not a previous export "
            f"(no {EXPORT_META}); nothing deleted (choose another path or pass --overwrite)"
        )


def check_output_files(paths: list[Path], overwrite: bool = False) -> None:
    """Before any work: may these .tflite files (each with its .json metadata) be written?"""
    for path in paths:
        _check_parent(path)
        if overwrite:
            continue
        meta = path.with_suffix(".json")
        for target in (path, meta):
            if target.is_dir():
                raise UserError(f"--output: {target} is a directory; nothing written")
        if path.exists() and not meta.is_file():
            raise UserError(
                f"--output: {path} exists and is not a previous export (no {meta.name} beside it); "
                f"nothing written (choose another path or pass --overwrite)"
            )
        if meta.exists() and not _is_our_meta(meta):
            raise UserError(
                f"--output: {meta} exists and is not export metadata of ours; nothing written "
                f"(choose another path or pass --overwrite)"
            )


def _is_our_meta(meta: Path) -> bool:
    try:
        data = json.loads(meta.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(data, dict) and data.get("format") == "tflite"


def publish(tmp: Path, output: Path, meta: dict, overwrite: bool = False) -> dict:
    """A checked export in `tmp`: writes its deepseek_export.json, then swaps it in for `output`.

    The check is repeated here (the export took minutes; `output` may have appeared meanwhile).
    When the swap fails, `tmp` is removed: a .tmp holding checks_passed: true would look valid.
    """
    try:
        check_output_dir(output, overwrite)
        meta = {**meta, "load_note": LOAD_NOTE} if meta.get("format") == "saved_model" else meta
        (tmp / EXPORT_META).write_text(json.dumps(meta, indent=2))
        if output.is_dir() and not output.is_symlink():
            shutil.rmtree(output)
        elif output.exists() or output.is_symlink():
            output.unlink()
        tmp.rename(output)
    except OSError as e:
        shutil.rmtree(tmp, ignore_errors=True)
        raise UserError(f"--output {output}: cannot write ({e.strerror or e}); nothing written") from None
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return meta
