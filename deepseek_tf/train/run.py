"""`train(config, workdir)`: the one entry point; a soup, a cross-encoder or a dual encoder."""
from __future__ import annotations

from pathlib import Path

from deepseek_tf.config import Config
from deepseek_tf.errors import ConfigError
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


def train(config: Config, workdir: str | Path, verbose: int = 1, shared_dir: str | Path | None = None) -> dict:
    """Trains per `config` into `workdir`; returns the history dict. `shared_dir` (default: workdir)
    holds what runs of one recipe can share: a soup passes its own dir, so its members score
    their distillation teacher's pairs once between them."""
    if config.train.soup < 1:
        raise ConfigError(f"train.soup must be >= 1, got {config.train.soup}")
    if config.train.soup > 1:  # N seeded runs averaged into one model (soup.py)
        return train_soup(config, workdir, verbose, train_member=train, check_member=check_config)
    if config.model.kind == "cross_encoder":  # groups of 1 positive + k mined negatives (rerank_train.py)
        return train_cross_encoder(config, workdir, verbose)
    return train_dual_encoder(config, workdir, verbose, shared_dir)
