"""`train(config, workdir)`: the one entry point; a soup, a cross-encoder or a dual encoder."""

from __future__ import annotations

from pathlib import Path

from deepseek_tf.config import Config, config_to_dict
from deepseek_tf.errors import ConfigError, UserError
from deepseek_tf.train.rerank_train import check_cross_encoder_config, train_cross_encoder
from deepseek_tf.train.soup import train_soup
from deepseek_tf.train.trainer import check_dual_config, train_dual_encoder


def check_config(config: Config) -> None:
    """The checks that need no data, before anything is written (by `train` and, for its members,
    by a soup or cross-fitting)."""
    if config.model.kind == "cross_encoder":
        check_cross_encoder_config(config)
    else:
        check_dual_config(config)


def check_workdir(config: Config, workdir: str | Path) -> None:
    """Before anything is written: `workdir` must be (or become) a directory, and a workdir with
    checkpoints must have been trained with the same `model` section. Restoring checkpoints of
    another architecture fails deep in TensorFlow with a shape error, and by then config.yaml
    would already be overwritten so that it no longer matches the checkpoints beside it."""
    import yaml

    workdir = Path(workdir)
    for path in (workdir, *workdir.parents):
        if path.exists():
            if not path.is_dir():
                raise UserError(f"--workdir {workdir}: {path} is a file, not a directory")
            break
    saved, checkpoints = workdir / "config.yaml", workdir / "checkpoints"
    if not saved.is_file() or not checkpoints.is_dir() or not any(checkpoints.iterdir()):
        return
    try:
        old = (yaml.safe_load(saved.read_text(encoding="utf-8")) or {}).get("model") or {}
    except (yaml.YAMLError, UnicodeDecodeError, AttributeError) as e:
        raise UserError(f"{saved}: cannot read the config the checkpoints were trained with ({e})") from None
    new = config_to_dict(config)["model"]
    # Keys only one side knows (a field added since) are left out: their defaults cannot conflict.
    changed = [k for k in new if k in old and old[k] != new[k]]
    if changed:
        shown = ", ".join(f"model.{k} ({old[k]!r} -> {new[k]!r})" for k in changed[:5])
        raise ConfigError(
            f"--workdir {workdir} holds checkpoints trained with another model config: {shown}; "
            f"nothing written (use a new --workdir, or the config it was trained with)"
        )


def train(config: Config, workdir: str | Path, verbose: int = 1, shared_dir: str | Path | None = None) -> dict:
    """Trains per `config` into `workdir`; returns the history dict. `shared_dir` (default: workdir)
    holds what runs of one recipe can share: a soup passes its own dir, so its members score
    their distillation teacher's pairs once between them."""
    check_workdir(config, workdir)
    if config.train.soup > 1:  # N seeded runs averaged into one model (soup.py)
        return train_soup(config, workdir, verbose, train_member=train, check_member=check_config)
    if config.model.kind == "cross_encoder":  # groups of 1 positive + k mined negatives (rerank_train.py)
        return train_cross_encoder(config, workdir, verbose)
    return train_dual_encoder(config, workdir, verbose, shared_dir)
