"""Model soups: the weight average by hand, the members' configs, and a tiny soup end to end
(its weights are the mean of its members', a second call trains nothing more)."""

import json

import numpy as np
import pytest
from conftest import ROOT

from deepseek_tf.config import config_to_dict, load_config
from deepseek_tf.errors import ConfigError


def test_average_weights_by_hand():
    from deepseek_tf.train.soup import average_weights

    a = [np.array([[1.0, 2.0], [3.0, 4.0]], np.float32), np.array([0.0], np.float32)]
    b = [np.array([[3.0, 6.0], [5.0, 0.0]], np.float32), np.array([1.0], np.float32)]
    # (a + b) / 2 = [[2, 4], [4, 2]] and [0.5]
    got = average_weights([a, b])
    np.testing.assert_array_equal(got[0], [[2.0, 4.0], [4.0, 2.0]])
    np.testing.assert_array_equal(got[1], [0.5])
    assert got[0].dtype == np.float32
    with pytest.raises(Exception, match="architecture"):
        average_weights([a, [a[0]]])


def test_member_configs_differ_only_in_seed():
    from deepseek_tf.train.soup import member_configs

    config = load_config(ROOT / "configs" / "tiny.yaml", ["train.soup=3", "train.seed=7"])
    members = member_configs(config)
    assert [m.train.seed for m in members] == [7, 8, 9] and all(m.train.soup == 1 for m in members)
    for m in members:  # everything else is the recipe
        a, b = config_to_dict(m), config_to_dict(config)
        a["train"].pop("seed"), a["train"].pop("soup"), b["train"].pop("seed"), b["train"].pop("soup")
        assert a == b


def test_soup_needs_a_shared_starting_point(tmp_path):
    from deepseek_tf.train import train

    with pytest.raises(ConfigError, match="scratch"):
        train(load_config(ROOT / "configs" / "tiny.yaml", ["train.soup=2"]), tmp_path, verbose=0)
    with pytest.raises(ConfigError, match="'train.soup' must be >= 1"):
        train(load_config(ROOT / "configs" / "tiny.yaml", ["train.soup=0"]), tmp_path, verbose=0)
    assert not any(tmp_path.iterdir())  # nothing half-written


def test_tiny_soup_is_the_mean_of_its_members(tiny_run, tiny_beir, tmp_path):
    from deepseek_tf.models.loading import load_trained
    from deepseek_tf.train import train

    # fine-tune the session's tiny model (a shared starting point) with two seeds
    config = load_config(
        ROOT / "configs" / "tiny.yaml",
        [
            f"data.dataset={tiny_beir}",
            f"model.backbone={tiny_run / 'model'}",
            "train.soup=2",
            "train.epochs=1",
            "train.steps_per_epoch=2",
        ],
    )
    history = train(config, tmp_path, verbose=0)
    assert [m["seed"] for m in history["members"]] == [42, 43] and history["steps"] == [4]
    soup, _, soup_config = load_trained(tmp_path / "model")
    assert soup_config.train.soup == 2
    members = [load_trained(tmp_path / "members" / f"seed{s}" / "model")[0].get_weights() for s in (42, 43)]
    assert any(not np.array_equal(x, y) for x, y in zip(*members))  # the seeds did train differently
    for got, x, y in zip(soup.get_weights(), *members):
        np.testing.assert_allclose(got, (x + y) / 2, atol=1e-6)
    # run again: both members are finished, so no step is taken and the soup is the same
    again = train(config, tmp_path, verbose=0)
    assert [m["steps"] for m in again["members"]] == [2, 2]
    for got, want in zip(load_trained(tmp_path / "model")[0].get_weights(), soup.get_weights()):
        np.testing.assert_array_equal(got, want)
    assert json.loads((tmp_path / "history.json").read_text())["members"][1]["seed"] == 43


@pytest.mark.parametrize(
    "yaml,override,message",
    [
        ("tiny.yaml", "train.loss=margin_mse", "need data.teacher"),
        ("cross_encoder_tiny.yaml", "data.judged_negatives=4", "judged_negatives must be in"),
        ("tiny.yaml", "data.judged_negatives=1", "set data.mine_negatives: true"),
    ],
)
def test_a_bad_member_setting_fails_before_the_soup_writes_anything(
    tiny_run, tiny_beir, tmp_path, yaml, override, message
):
    from deepseek_tf.train import train

    # each member would refuse it; the soup used to write its config.yaml first
    config = load_config(
        ROOT / "configs" / yaml,
        [f"data.dataset={tiny_beir}", f"model.backbone={tiny_run / 'model'}", "train.soup=2", override],
    )
    with pytest.raises(ConfigError, match=message):
        train(config, tmp_path / "soup", verbose=0)
    assert not (tmp_path / "soup").exists()
