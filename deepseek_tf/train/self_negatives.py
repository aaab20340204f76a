"""data.negatives_from=self: the pairs mined with the model's start point, kept in the workdir.

A resumed run must train on the negatives its checkpoints were trained on (its weights have moved
on, and its data stream continues where the first run's stopped), so they are mined once and saved
with what they were mined from: the model and data settings, the seed and the data files' digests.
A run whose inputs differ mines again while no checkpoint has trained on the saved ones, and is
refused once one has.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from pathlib import Path

from deepseek_tf import data as data_lib
from deepseek_tf.config import Config, config_to_dict
from deepseek_tf.data.beir import file_sha256
from deepseek_tf.errors import ConfigError, UserError
from deepseek_tf.files import write_json

SELF_NEGATIVES = "self_negatives.json"  # in the workdir


def mining_inputs(config: Config) -> dict:
    """What self-mined pairs depend on, as JSON reads it back: the `model` and `data` sections,
    train.seed and the sha256 of the dataset's corpus, queries and training qrels."""
    sections = config_to_dict(config)
    root = Path(config.data.dataset or "")
    files = [root / "corpus.jsonl", root / "queries.jsonl", root / "qrels" / f"{config.data.train_split}.tsv"]
    files = files if config.data.dataset else []
    inputs = {
        "model": sections["model"],
        "data": sections["data"],
        "train.seed": config.train.seed,
        "files": {f.name: file_sha256(f) for f in files if f.is_file()},
    }
    return json.loads(json.dumps(inputs))  # tuples as lists, as the saved copy has them


def changed_inputs(old: dict, new: dict) -> list[str]:
    """The settings (`data.num_negatives`) or files (`corpus.jsonl`) that differ between OLD and NEW."""
    changed = []
    for key in sorted(set(old) | set(new)):
        a, b = old.get(key), new.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            prefix = "" if key == "files" else f"{key}."
            changed += [f"{prefix}{k}" for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)]
        elif a != b:
            changed.append(key)
    return changed


def check_saved_pairs(workdir: Path, inputs: dict) -> None:
    """Before anything is written: a WORKDIR whose checkpoints trained on saved pairs must have
    them, mined from INPUTS (`mining_inputs`)."""
    path, checkpoints = workdir / SELF_NEGATIVES, workdir / "checkpoints"
    if not checkpoints.is_dir() or not any(checkpoints.iterdir()):
        return
    if not path.is_file():
        raise UserError(
            f"{path}: missing, so the negatives this run mined from its start point are lost; "
            "train again in an empty --workdir"
        )
    saved = json.loads(path.read_text(encoding="utf-8")).get("inputs")
    if saved != inputs:
        changed = changed_inputs(saved, inputs) if saved is not None else ["not recorded"]
        raise ConfigError(
            f"{path}: the checkpoints trained on negatives mined with other inputs ({', '.join(changed[:6])}); "
            "nothing written (use a new --workdir, or the settings and data it was trained with)"
        )


def self_mined_pairs(workdir: Path, inputs: dict, mine: Callable[[], data_lib.Pairs]) -> data_lib.Pairs:
    """The pairs `mine` finds with the model's start point, mined once per INPUTS (`mining_inputs`)
    and kept in WORKDIR; saved pairs of other inputs (no checkpoint trained on them:
    `check_saved_pairs`) are mined again."""
    path = workdir / SELF_NEGATIVES
    if path.is_file():
        saved = json.loads(path.read_text(encoding="utf-8"))
        if saved.get("inputs") == inputs:
            return data_lib.Pairs(**saved["pairs"])
    pairs = mine()
    write_json(path, {"inputs": inputs, "pairs": dataclasses.asdict(pairs)})
    return pairs
