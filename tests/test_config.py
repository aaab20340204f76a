import dataclasses
import re

import pytest
import yaml
from conftest import ROOT, run_cli

from deepseek_tf.config import (
    Config,
    config_from_dict,
    config_to_dict,
    in_range,
    iter_settings,
    load_config,
    reference_markdown,
    save_config,
)
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


# ---------------------------------------------------------------------------- ranges
BAD_VALUES = [  # (key, value, the rule the message gives)
    ("train.learning_rate", -1, "> 0"),
    ("train.learning_rate", 0, "> 0"),
    ("train.batch_size", 0, ">= 1"),
    ("train.epochs", 0, ">= 1"),
    ("train.steps_per_epoch", 0, ">= 1"),
    ("train.decay_steps", 0, ">= 1"),
    ("train.decay_rate", 0, "in (0, 1]"),
    ("train.decay_rate", 1.5, "in (0, 1]"),
    ("train.warmup_ratio", 1.0, "in [0, 1)"),
    ("train.warmup_ratio", -0.1, "in [0, 1)"),
    ("train.weight_decay", -0.01, ">= 0"),
    ("train.clipnorm", 0, "> 0"),
    ("train.temperature", 0, "> 0"),
    ("train.margin", -1, ">= 0"),
    ("train.soup", 0, ">= 1"),
    ("train.accumulation_steps", 0, ">= 1"),
    ("train.patience", 0, ">= 1"),
    ("train.distill_weight", -0.1, ">= 0"),
    ("train.seed", -1, ">= 0"),
    ("model.dropout", 1.0, "in [0, 1)"),
    ("model.dropout", -0.1, "in [0, 1)"),
    ("model.num_layers", 0, ">= 1"),
    ("model.projection_dim", 0, ">= 1"),
    ("model.query_max_length", 1, ">= 2"),
    ("data.num_negatives", 0, ">= 1"),
    ("data.hard_negatives", 0, ">= 1"),
    ("data.judged_negatives", -1, ">= 0"),
    ("data.dev_fraction", 1.0, "in [0, 1)"),
    ("data.mine_margin", 1.0, "in [0, 1)"),
    ("data.mine_top_k", 0, ">= 1"),
    ("eval.top_k", 0, ">= 1"),
    ("export.tolerance", 0, "> 0"),
]


@pytest.mark.parametrize("key,value,rule", BAD_VALUES)
def test_out_of_range_values_name_the_key_the_file_and_the_range(tmp_path, key, value, rule):
    section, name = key.split(".")
    path = _write(tmp_path, {section: {name: value}})
    with pytest.raises(ConfigError) as e:
        load_config(path)
    assert str(e.value) == f"{path}: '{key}' must be {rule}, got {value!r}"
    with pytest.raises(ConfigError, match=re.escape(f"'{key}' must be {rule}")):  # --set goes through the same
        load_config(None, [f"{key}={value}"])


def test_range_bounds_themselves_and_null_pass(tmp_path):
    config = load_config(
        None,
        [
            "train.decay_rate=1",
            "train.warmup_ratio=0",
            "model.dropout=0",
            "data.dev_fraction=0",
            "train.clipnorm=null",
            "train.patience=null",
            "train.batch_size=1",
            "model.query_max_length=2",
        ],
    )
    assert config.train.decay_rate == 1.0 and config.train.clipnorm is None and config.train.batch_size == 1


def test_every_default_satisfies_its_own_rule():
    assert config_from_dict(config_to_dict(Config())) == Config()
    for key, _, f in iter_settings():
        assert f.metadata["doc"], f"{key} has no description"
        assert not (f.metadata["range"] and f.metadata["choices"]), key
        if f.metadata["range"] and f.default is not None:
            assert in_range(f.default, f.metadata["range"]), key
        if f.metadata["choices"]:  # a list key's choices hold for each item
            items = f.default if isinstance(f.default, tuple) else (f.default,)
            assert all(item in f.metadata["choices"] for item in items), key


@pytest.mark.parametrize(
    "rule,inside,outside",
    [
        (">= 1", [1, 7], [0.99, -1]),
        ("> 0", [1e-9], [0, -1]),
        ("< 2", [1.99], [2]),
        ("<= 2", [2], [2.01]),
        ("[0, 1)", [0, 0.5], [1, -0.1]),
        ("(0, 1]", [1, 1e-9], [0, 1.1]),
        ("[0, 1]", [0, 1], [1.1]),
        ("(0, 1)", [0.5], [0, 1]),
    ],
)
def test_range_rules(rule, inside, outside):
    assert all(in_range(v, rule) for v in inside) and not any(in_range(v, rule) for v in outside)
    with pytest.raises(ValueError):
        in_range(1, "between 0 and 1")


def test_round_trip_through_yaml_with_many_keys_changed(tmp_path):
    changed = {
        "model": {
            "kind": "cross_encoder",
            "vocab": "v.txt",
            "dropout": 0.0,
            "projection_dim": 128,
            "score_head": "cosine",
            "interaction": "light",
        },
        "data": {
            "dataset": "d",
            "dev_fraction": 0.2,
            "judged_negatives": 1,
            "mine_negatives": True,
            "negatives_from": "run:r.trec",
            "teacher": "t",
        },
        "train": {
            "learning_rate": 3e-5,
            "clipnorm": None,
            "loss": "listwise",
            "soup": 2,
            "patience": 2,
            "mixed_precision": "auto",
            "jit_compile": "xla",
            "distill_weight": 0.1,
        },
        "export": {"quantize": "int8"},
        "eval": {"top_k": 10},
    }
    config = config_from_dict(changed)
    text = yaml.safe_dump(config_to_dict(config), sort_keys=False)
    assert load_config(_write(tmp_path, yaml.safe_load(text))) == config
    save_config(config, tmp_path / "saved.yaml")
    assert load_config(tmp_path / "saved.yaml") == config


def test_retired_keys_load_at_their_off_value_and_are_refused_otherwise(tmp_path):
    # model dirs written while these experiments existed list every key at its default
    old = _write(tmp_path, {"train": {"symmetric": False, "layer_decay": None}, "data": {"folds": 0}})
    assert load_config(old) == Config()
    with pytest.raises(ConfigError, match=r"'train.symmetric' is no longer a setting"):
        load_config(None, ["train.symmetric=true"])
    assert "symmetric" not in config_to_dict(Config())["train"]


def test_cli_bad_range_exits_2_before_writing_anything(tmp_path):
    proc = run_cli(
        "deepseek_tf.train",
        "--config",
        str(ROOT / "configs" / "tiny.yaml"),
        "--set",
        "train.learning_rate=-1",
        "--workdir",
        str(tmp_path / "w"),
    )
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        f"error: {ROOT / 'configs' / 'tiny.yaml'} (with --set): 'train.learning_rate' must be > 0, got -1"
    ]
    assert not (tmp_path / "w").exists()


# ---------------------------------------------------------------------------- reference
def test_configuration_reference_is_current():
    doc = ROOT / "docs" / "configuration.md"
    assert doc.is_file() and doc.read_text(encoding="utf-8") == reference_markdown(), (
        "docs/configuration.md is stale: run `make docs`"
    )


def test_reference_lists_every_key_with_default_and_range():
    text = reference_markdown()
    for key, _, f in iter_settings():
        row = next(line for line in text.splitlines() if line.startswith(f"| `{key}` |"))
        if f.metadata["range"]:
            assert f"`{f.metadata['range']}`" in row, key
    assert "| `train.learning_rate` | float | `5.0e-05` | `> 0` |" in text
    assert "| `model.pooling` | str | `mean` | `mean`, `cls` |" in text
    assert "symmetric" not in text
