"""data.negatives_from=self: the mined pairs are kept with what they were mined from, so a run never
trains on negatives of other settings or other data: it mines again while no checkpoint has
trained on the saved ones, and is refused, touching nothing, once one has."""

from __future__ import annotations

import json
import shutil

import pytest
from conftest import ROOT

from deepseek_tf.config import load_config
from deepseek_tf.errors import ConfigError
from deepseek_tf.train import train

MINED = ["data.mine_negatives=true", "data.negatives_from=self", "data.mine_top_k=10", "train.steps_per_epoch=2"]


def _config(data, *overrides):
    return load_config(ROOT / "configs/tiny.yaml", [f"data.dataset={data}", "model.dropout=0.0", *MINED, *overrides])


def _saved(workdir) -> dict:
    return json.loads((workdir / "self_negatives.json").read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def mined_run(tiny_beir, tmp_path_factory):
    """One epoch with self-mined negatives: (its data dir, a copy of it, its workdir) — read-only."""
    root = tmp_path_factory.mktemp("self_negatives")
    data = shutil.copytree(tiny_beir, root / "data")
    train(_config(data, "train.epochs=1"), root / "run", verbose=0)
    return data, root / "run"


@pytest.mark.parametrize(
    "change, named",
    [(["data.hard_negatives=2"], "data.hard_negatives"), (["data.mine_top_k=5"], "data.mine_top_k")],
)
def test_a_resume_with_other_mining_settings_is_refused(mined_run, tmp_path, change, named):
    data, run = mined_run
    workdir = shutil.copytree(run, tmp_path / "run")
    before = {p.name: p.read_bytes() for p in workdir.iterdir() if p.is_file()}
    with pytest.raises(ConfigError, match=rf"self_negatives.json: .*{named}"):
        train(_config(data, "train.epochs=2", *change), workdir, verbose=0)
    assert {p.name: p.read_bytes() for p in workdir.iterdir() if p.is_file()} == before


def test_a_resume_over_changed_data_is_refused(mined_run, tmp_path):
    data, run = mined_run
    data = shutil.copytree(data, tmp_path / "data")
    workdir = shutil.copytree(run, tmp_path / "run")
    saved = _saved(workdir)
    saved["inputs"]["data"]["dataset"] = str(data)  # the same settings over a copy of the data ...
    (workdir / "self_negatives.json").write_text(json.dumps(saved), encoding="utf-8")
    with (data / "corpus.jsonl").open("a", encoding="utf-8") as f:  # ... whose corpus then changed
        f.write(json.dumps({"_id": "new", "title": "a new document", "text": "about espresso"}) + "\n")
    with pytest.raises(ConfigError, match="corpus.jsonl"):
        train(_config(data, "train.epochs=2"), workdir, verbose=0)


def test_before_any_checkpoint_other_settings_mine_again(mined_run, tmp_path):
    """A run stopped between mining and its first checkpoint, started again with other settings."""
    data, run = mined_run
    workdir = tmp_path / "run"
    workdir.mkdir()
    shutil.copy(run / "self_negatives.json", workdir)
    train(_config(data, "train.epochs=1", "data.hard_negatives=2"), workdir, verbose=0)
    saved = _saved(workdir)
    assert saved["inputs"]["data"]["hard_negatives"] == 2
    assert all(len(negs) == 2 for negs in saved["pairs"]["neg_ids"])
