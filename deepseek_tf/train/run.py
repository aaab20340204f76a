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


# `train` / `data` settings a run with checkpoints may be resumed with: they extend or continue
# it (or only say how it runs), not what its checkpoints were trained on. Any other change is
# refused, so that config.yaml keeps describing the model beside it.
RESUMABLE = {
    "train.epochs": "more epochs continue the step count, schedule and data stream (tests/test_train_resume.py)",
    "train.patience": "early stopping reads best/best.json as it stands: a patience continues or ends the run",
    "train.checkpoint_every": "how often a checkpoint is written, not what is trained",
    "train.jit_compile": "XLA or not compiles the same step ('auto' is decided per machine anyway)",
}


def _nonempty(path: Path) -> bool:
    return path.is_dir() and any(path.iterdir())


def _run_kind(soup: int | None, members: bool) -> str:
    if soup is None:
        return "a soup (members/)" if members else "a single run (checkpoints/)"
    return f"a soup of {soup}" if soup > 1 else "a single run"


def check_workdir(config: Config, workdir: str | Path) -> None:
    """Before anything is written: `workdir` must be (or become) a directory, and a trained one
    (checkpoints/, or a soup's members/) takes only the run it was trained as: the same kind
    (single run, or a soup of as many members) and the same `model`, `data` and `train` sections
    but for RESUMABLE. Restoring checkpoints of another architecture fails deep in TensorFlow with
    a shape error; other settings would resume the checkpoints, train nothing new and overwrite
    config.yaml (and model/) so that they no longer match the checkpoints beside them."""
    import yaml

    from deepseek_tf.train.soup import member_configs, member_dir

    workdir = Path(workdir)
    for path in (workdir, *workdir.parents):
        if path.exists():
            if not path.is_dir():
                raise UserError(f"--workdir {workdir}: {path} is a file, not a directory")
            break
    single, members = _nonempty(workdir / "checkpoints"), _nonempty(workdir / "members")
    if not single and not members:
        return
    saved, soup = workdir / "config.yaml", config.train.soup
    old: dict = {}
    if saved.is_file():
        try:
            old = yaml.safe_load(saved.read_text(encoding="utf-8")) or {}
            old = {s: v if isinstance(v := old.get(s), dict) else {} for s in ("model", "data", "train")}
        except (yaml.YAMLError, UnicodeDecodeError, AttributeError) as e:
            raise UserError(f"{saved}: cannot read the config the checkpoints were trained with ({e})") from None
    held = old.get("train", {}).get("soup")
    held = held if isinstance(held, int) and not isinstance(held, bool) else None
    if (held is not None and held != soup) or (held is None and (soup > 1) != members):
        raise ConfigError(
            f"--workdir {workdir} holds {_run_kind(held, members)}; train.soup={soup} would train "
            f"{_run_kind(soup, soup > 1)} over it; nothing written (use a new --workdir"
            + (f", or train.soup={held})" if held is not None else ")")
        )
    new = config_to_dict(config)
    # check_saved_pairs compares the data section of a self-mining run itself, naming the file
    self_mined = config.model.kind != "cross_encoder" and config.data.mine_negatives
    self_mined = self_mined and config.data.negatives_from == "self"
    sections = ("model", "train") if self_mined else ("model", "data", "train")
    # Keys only one side knows (a field added since) are left out: their defaults cannot conflict.
    changed = [
        (f"{s}.{k}", old[s][k], v)
        for s in sections
        for k, v in new[s].items()
        if k in old.get(s, {}) and old[s][k] != v and f"{s}.{k}" not in RESUMABLE
    ]
    if changed:
        shown = ", ".join(f"{k} ({a!r} -> {b!r})" for k, a, b in changed[:5])
        kinds = "/".join(dict.fromkeys(k.split(".")[0] for k, _, _ in changed))
        raise ConfigError(
            f"--workdir {workdir} holds checkpoints trained with another {kinds} config: {shown}; "
            f"nothing written (use a new --workdir, or the config it was trained with)"
        )
    if soup > 1:  # each member's checkpoints too, before the soup rewrites its config.yaml
        for member in member_configs(config):
            check_workdir(member, member_dir(workdir, member.train.seed))


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
