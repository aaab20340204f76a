"""A workdir keeps the run it was trained as: a rerun that would switch it between a soup and a
single run (or another soup size), or continue its checkpoints with other `train` / `data`
settings, is refused before anything is written; the settings that extend or continue a run
(train.epochs, train.patience, train.checkpoint_every, train.jit_compile) still resume."""

from __future__ import annotations

import pytest
from conftest import ROOT

from deepseek_tf.config import load_config
from deepseek_tf.errors import ConfigError
from deepseek_tf.train import train


def _config(tiny_beir, tiny_run, *overrides):
    """tiny.yaml fine-tuned from the session's tiny model (so a soup may use it too), 1 step an epoch."""
    return load_config(
        ROOT / "configs" / "tiny.yaml",
        [
            f"data.dataset={tiny_beir}",
            f"model.backbone={tiny_run / 'model'}",
            "model.dropout=0.0",
            "train.epochs=1",
            "train.steps_per_epoch=1",
            *overrides,
        ],
    )


def _files(workdir) -> dict:
    return {str(p.relative_to(workdir)): p.read_bytes() for p in sorted(workdir.rglob("*")) if p.is_file()}


def _refused(config, workdir, match: str) -> None:
    before = _files(workdir)
    with pytest.raises(ConfigError, match=match) as e:
        train(config, workdir, verbose=0)
    assert "\n" not in str(e.value)
    assert _files(workdir) == before  # nothing written


def test_a_soup_over_a_single_run_is_refused(tiny_beir, tiny_run, tmp_path):
    train(_config(tiny_beir, tiny_run), tmp_path, verbose=0)
    _refused(_config(tiny_beir, tiny_run, "train.soup=2"), tmp_path, r"single run.*train\.soup")


def test_a_soup_workdir_takes_no_single_run_nor_another_soup_size(tiny_beir, tiny_run, tmp_path):
    history = train(_config(tiny_beir, tiny_run, "train.soup=2"), tmp_path, verbose=0)
    assert history["steps"] == [2]
    _refused(_config(tiny_beir, tiny_run), tmp_path, r"soup of 2.*train\.soup")
    _refused(_config(tiny_beir, tiny_run, "train.soup=3"), tmp_path, r"soup of 2.*train\.soup=3")
    # the members' checkpoints are checked before the soup's config.yaml is rewritten
    _refused(
        _config(tiny_beir, tiny_run, "train.soup=2", "train.learning_rate=5e-4"),
        tmp_path,
        r"train\.learning_rate \(0\.001 -> 0\.0005\)",
    )
    # the same soup with more epochs extends every member
    assert train(_config(tiny_beir, tiny_run, "train.soup=2", "train.epochs=2"), tmp_path, verbose=0)["steps"] == [4]


def test_a_resume_with_other_train_or_data_settings_is_refused(tiny_beir, tiny_run, tmp_path):
    train(_config(tiny_beir, tiny_run), tmp_path, verbose=0)
    _refused(
        _config(tiny_beir, tiny_run, "train.learning_rate=5e-4"),
        tmp_path,
        r"another train config: train\.learning_rate \(0\.001 -> 0\.0005\); nothing written",
    )
    _refused(
        _config(tiny_beir, tiny_run, "data.use_title=false", "train.batch_size=2", "train.epochs=2"),
        tmp_path,
        r"another data/train config: data\.use_title \(True -> False\), train\.batch_size \(4 -> 2\);",
    )
    _refused(_config(tiny_beir, tiny_run, "train.steps_per_epoch=2"), tmp_path, r"train\.steps_per_epoch \(1 -> 2\)")
    # what extends or continues the run still resumes it
    more = ["train.epochs=2", "train.patience=3", "train.checkpoint_every=1", "train.jit_compile=auto"]
    assert train(_config(tiny_beir, tiny_run, *more), tmp_path, verbose=0)["steps"] == [2]
    assert "epochs: 2" in (tmp_path / "config.yaml").read_text(encoding="utf-8")
