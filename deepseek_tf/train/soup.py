"""Uniform model soups: train one recipe with `train.soup` seeds and average the weights.

Runs fine-tuned from the same pretrained checkpoint stay in one basin of the loss, so the
element-wise mean of their weights is itself a model, usually better than each run and much
less at the mercy of the seed (Wortsman et al., 2022, "Model soups: averaging weights of
multiple fine-tuned models improves accuracy without increasing inference time"). It costs
`soup` trainings and nothing at inference: the soup is one model of the same size.

    θ_soup = (1/N) Σ_i θ_i,  θ_i trained with train.seed + i  (i = 0 … N−1)

Members live in WORKDIR/members/seed<S>/ (each a normal run: resumable, with its own
checkpoints and history); the soup is written to WORKDIR/model/.
"""

from __future__ import annotations

import dataclasses
import json
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np

from deepseek_tf.config import Config, save_config
from deepseek_tf.errors import ConfigError, UserError
from deepseek_tf.models.backbones import backbone_kind
from deepseek_tf.models.loading import load_trained
from deepseek_tf.train.artifacts import save_trained_model


def member_configs(config: Config) -> list[Config]:
    """The soup's members: the same config with seeds seed, seed + 1, … and soup = 1."""
    t = config.train
    return [dataclasses.replace(config, train=dataclasses.replace(t, seed=t.seed + i, soup=1)) for i in range(t.soup)]


def member_dir(workdir: str | Path, seed: int) -> Path:
    """Where the member trained with `seed` lives: WORKDIR/members/seed<S>/."""
    return Path(workdir) / "members" / f"seed{seed}"


def average_weights(weights: list[list[np.ndarray]]) -> list[np.ndarray]:
    """Element-wise mean of N models' weight lists (same architecture, same order)."""
    if not weights:
        raise ValueError("no models to average")
    shapes = [[w.shape for w in ws] for ws in weights]
    if any(s != shapes[0] for s in shapes):
        raise UserError("soup members differ in architecture; cannot average their weights")
    return [np.mean([ws[i] for ws in weights], axis=0).astype(weights[0][i].dtype) for i in range(len(weights[0]))]


def train_soup(
    config: Config,
    workdir: str | Path,
    verbose: int,
    train_member: Callable[..., dict],
    check_member: Callable[[Config], None],
) -> dict:
    """Trains every member with `train_member` (skipping finished ones), averages them into WORKDIR/model/.

    history: "members" (each member's seed, final loss, steps), "steps" (all members' steps).
    """
    if config.train.soup < 2:
        raise ConfigError(f"train.soup must be >= 2 for a soup, got {config.train.soup}")
    if backbone_kind(config.model.backbone) == "scratch":
        raise ConfigError(
            "train.soup averages runs fine-tuned from one checkpoint; with model.backbone: "
            "scratch every seed starts from different random weights"
        )
    if config.model.projection_dim:
        raise ConfigError(
            "train.soup: model.projection_dim gives every seed a differently initialised "
            "projection; soups need members that start from the same weights"
        )
    check_member(member_configs(config)[0])  # a bad member setting fails before the soup's dir is written
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    save_config(config, workdir / "config.yaml")
    members, loaded = [], []
    for i, member in enumerate(member_configs(config)):
        seed = member.train.seed
        mdir = member_dir(workdir, seed)
        if verbose:
            print(f"soup member {i + 1}/{config.train.soup} (seed {seed}) -> {mdir}", file=sys.stderr)
        history = train_member(member, mdir, verbose, shared_dir=workdir)  # a finished member resumes at its end
        members.append({"seed": seed, "steps": history["steps"][0], "loss": history.get("loss", [float("nan")])[-1]})
        loaded.append(load_trained(mdir / "model"))
    vocabs = {tuple(tok.vocab) for _, tok, _ in loaded}
    if len(vocabs) > 1:
        raise UserError("soup members have different vocabularies; cannot average their weights")
    model, tokenizer, _ = loaded[0]
    model.set_weights(average_weights([m.get_weights() for m, _, _ in loaded]))
    save_trained_model(model, tokenizer, config, workdir / "model")
    history = {
        "members": members,
        "steps": [sum(m["steps"] for m in members)],
        "loss": [float(np.mean([m["loss"] for m in members]))],
    }
    (workdir / "history.json").write_text(json.dumps(history, indent=2))
    return history
