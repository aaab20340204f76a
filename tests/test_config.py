import dataclasses

import pytest
import yaml

from conftest import ROOT, run_cli
from deepseek_tf.config import Config, config_from_dict, config_to_dict, load_config, save_config
from deepseek_tf.errors import ConfigError


SHIPPED = sorted(p.name for p in (ROOT / "configs").glob("*.yaml"))


def test_every_shipped_config_is_checked():
    # the glob must find the configs (an empty parametrize would skip the round trip silently)
    assert {"tiny.yaml", "cranfield_minilm.yaml", "cross_encoder_minilm.yaml"} <= set(SHIPPED)


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_configs_load_and_round_trip(name, tmp_path):
    config = load_config(ROOT / "configs" / name)
    save_config(config, tmp_path / "c.yaml")
    assert load_config(tmp_path / "c.yaml") == config
    assert config_from_dict(config_to_dict(config)) == config


def test_config_is_frozen():
    with pytest.raises(dataclasses.FrozenInstanceError):
        Config().train.batch_size = 3


def _write(tmp_path, raw):
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def test_unknown_key_is_named(tmp_path):
    path = _write(tmp_path, {"train": {"batchsize": 8}})
    with pytest.raises(ConfigError, match=r"unknown key 'train\.batchsize'") as e:
        load_config(path)
    assert str(path) in str(e.value)


def test_unknown_section_and_wrong_type_and_choice(tmp_path):
    with pytest.raises(ConfigError, match="unknown key 'trian'"):
        load_config(_write(tmp_path, {"trian": {}}))
    with pytest.raises(ConfigError, match="'train.batch_size' must be int"):
        load_config(_write(tmp_path, {"train": {"batch_size": "eight"}}))
    with pytest.raises(ConfigError, match="'train.batch_size' must be int"):
        load_config(_write(tmp_path, {"train": {"batch_size": True}}))
    with pytest.raises(ConfigError, match="'model.pooling' must be one of mean, cls"):
        load_config(_write(tmp_path, {"model": {"pooling": "max"}}))
    for bad in (1.0, 0, -0.5):  # an EMA needs 0 < m < 1
        with pytest.raises(ConfigError, match=r"'train.ema_momentum' must be in \(0, 1\)"):
            load_config(_write(tmp_path, {"train": {"ema_momentum": bad}}))
    assert load_config(_write(tmp_path, {"train": {"ema_momentum": 0.99}})).train.ema_momentum == 0.99
    for bad in (1.0, 0, 1.5):  # layer-wise decay: 0 < d < 1 (None turns it off)
        with pytest.raises(ConfigError, match=r"'train.layer_decay' must be in \(0, 1\)"):
            load_config(_write(tmp_path, {"train": {"layer_decay": bad}}))


def test_overrides_are_typed_and_checked(tmp_path):
    path = _write(tmp_path, {"train": {"batch_size": 4}})
    config = load_config(path, ["train.batch_size=8", "train.learning_rate=1e-4", "model.projection_dim=null"])
    assert config.train.batch_size == 8
    assert config.train.learning_rate == pytest.approx(1e-4)
    assert config.model.projection_dim is None
    # ints are accepted where floats are expected, and stored as float
    assert load_config(path, ["train.temperature=1"]).train.temperature == 1.0
    with pytest.raises(ConfigError, match="unknown key 'train.bach_size'"):
        load_config(path, ["train.bach_size=8"])
    with pytest.raises(ConfigError, match="expected key.sub=value"):
        load_config(path, ["train.batch_size"])


def test_cli_misspelled_key_exits_2_with_one_line(tmp_path):
    path = _write(tmp_path, {"train": {"batchsize": 8}})
    proc = run_cli("deepseek_tf.train", "--config", str(path), "--workdir", str(tmp_path / "w"))
    assert proc.returncode == 2
    lines = [l for l in proc.stderr.splitlines() if l.startswith("error:")]
    assert lines == [f"error: {path}: unknown key 'train.batchsize'"]
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "w").exists()  # nothing half-written
