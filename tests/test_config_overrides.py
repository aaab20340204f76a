"""`--set key=value` means the value as written, read by the key's declared type (not as YAML 1.1,
which turned `010` into 8, `1:30` into 90 and cut `/tmp/a #b` at the comment)."""

import pytest
from conftest import ROOT

from deepseek_tf.config import load_config
from deepseek_tf.errors import ConfigError

TINY = ROOT / "configs" / "tiny.yaml"
SOURCE = f"{TINY} (with --set)"


def _set(*overrides):
    return load_config(TINY, list(overrides))


@pytest.mark.parametrize(
    "override,key,expected",
    [
        # int keys: decimal, as written
        ("train.epochs=010", "train.epochs", 10),
        ("train.epochs=7", "train.epochs", 7),
        ("train.seed=+7", "train.seed", 7),
        ("train.seed= 12 ", "train.seed", 12),
        ("model.projection_dim=0064", "model.projection_dim", 64),
        # float keys
        ("train.learning_rate=3e-5", "train.learning_rate", 3e-5),
        ("train.learning_rate=1.0e-2", "train.learning_rate", 0.01),
        ("train.learning_rate=0.01", "train.learning_rate", 0.01),
        ("train.learning_rate=.5", "train.learning_rate", 0.5),
        ("train.temperature=1", "train.temperature", 1.0),
        ("train.clipnorm=2", "train.clipnorm", 2.0),
        # str keys: the text itself
        ("data.dataset=/tmp/a #b", "data.dataset", "/tmp/a #b"),
        ("data.dataset=2024", "data.dataset", "2024"),
        ("data.dataset=on", "data.dataset", "on"),
        ("data.dataset=no", "data.dataset", "no"),
        ("data.dataset=1e3", "data.dataset", "1e3"),
        ("data.dataset=runs/x: y", "data.dataset", "runs/x: y"),
        ("data.dataset=[a]", "data.dataset", "[a]"),
        ("data.teacher=runs/cross_encoder_minilm/model", "data.teacher", "runs/cross_encoder_minilm/model"),
        ("data.negatives_from=run:runs/x.trec", "data.negatives_from", "run:runs/x.trec"),
        ("data.negatives_from=self:", "data.negatives_from", "self:"),
        ("model.backbone=hub:/models/e5", "model.backbone", "hub:/models/e5"),
        ("model.query_prefix=query: ", "model.query_prefix", "query: "),
        ("train.mixed_precision=none", "train.mixed_precision", "none"),
        # a whole-text quoted string is unquoted (the only way to write an empty string or "null")
        ("model.query_prefix=''", "model.query_prefix", ""),
        ("model.query_prefix='query: '", "model.query_prefix", "query: "),
        ('data.dataset="null"', "data.dataset", "null"),
        # unset an optional key
        ("data.dataset=null", "data.dataset", None),
        ("data.dataset=", "data.dataset", None),
        ("data.dataset=~", "data.dataset", None),
        ("model.projection_dim=null", "model.projection_dim", None),
        ("train.clipnorm=NULL", "train.clipnorm", None),
        # bool keys
        ("model.lowercase=false", "model.lowercase", False),
        ("model.lowercase=False", "model.lowercase", False),
        ("model.lowercase=TRUE", "model.lowercase", True),
        ("data.mine_negatives=true", "data.mine_negatives", True),
        # list keys stay YAML flow lists
        ("model.doc_inputs=[text, image]", "model.doc_inputs", ("text", "image")),
        ("model.doc_inputs=[text,image]", "model.doc_inputs", ("text", "image")),
        ("model.doc_inputs=[text]", "model.doc_inputs", ("text",)),
    ],
)
def test_an_override_means_its_literal_value(override, key, expected):
    section, name = key.split(".")
    value = getattr(getattr(_set(override), section), name)
    assert value == expected and type(value) is type(expected), (override, value)


@pytest.mark.parametrize(
    "override,message",
    [
        ("train.epochs=0x10", "'train.epochs' must be int, got '0x10'"),
        ("train.epochs=0o10", "'train.epochs' must be int, got '0o10'"),
        ("train.epochs=1_0", "'train.epochs' must be int, got '1_0'"),
        ("train.epochs=1:30", "'train.epochs' must be int, got '1:30'"),
        ("train.epochs=2.0", "'train.epochs' must be int, got '2.0'"),
        ("train.epochs=1e3", "'train.epochs' must be int, got '1e3'"),
        ("train.epochs=true", "'train.epochs' must be int, got 'true'"),
        ("train.epochs=10 # ten", "'train.epochs' must be int, got '10 # ten'"),
        ("train.epochs=\u0661\u0660", "'train.epochs' must be int, got '\u0661\u0660'"),  # Arabic-Indic "10"
        ("train.patience=none", "'train.patience' must be int, got 'none'"),
        ("train.learning_rate=1:30", "'train.learning_rate' must be float, got '1:30'"),
        ("train.learning_rate=1_0", "'train.learning_rate' must be float, got '1_0'"),
        ("train.learning_rate=0x10", "'train.learning_rate' must be float, got '0x10'"),
        ("train.learning_rate=inf", "'train.learning_rate' must be a finite number, got inf"),
        ("train.learning_rate=.inf", "'train.learning_rate' must be a finite number, got inf"),
        ("train.learning_rate=1e999", "'train.learning_rate' must be a finite number, got inf"),
        ("train.distill_weight=Infinity", "'train.distill_weight' must be a finite number, got inf"),
        ("train.learning_rate=nan", "'train.learning_rate' must be a finite number, got nan"),
        ("train.clipnorm=.NaN", "'train.clipnorm' must be a finite number, got nan"),
        ("model.lowercase=yes", "'model.lowercase' must be bool, got 'yes'"),
        ("model.lowercase=on", "'model.lowercase' must be bool, got 'on'"),
        ("model.lowercase=1", "'model.lowercase' must be bool, got '1'"),
        ("model.pooling=cls #x", "'model.pooling' must be one of mean, cls, got 'cls #x'"),
        ("model.doc_inputs=[text, 2024]", "'model.doc_inputs' must be a list of strings, got ['text', 2024]"),
    ],
)
def test_a_value_that_is_not_its_keys_type_is_refused_in_one_line(override, message):
    with pytest.raises(ConfigError) as e:
        _set(override)
    assert str(e.value) == f"{SOURCE}: {message}"


def test_range_messages_show_the_value_as_written():
    with pytest.raises(ConfigError) as e:
        _set("train.learning_rate=-1")
    assert str(e.value) == f"{SOURCE}: 'train.learning_rate' must be > 0, got -1"
    with pytest.raises(ConfigError) as e:
        _set("train.epochs=-010")
    assert str(e.value) == f"{SOURCE}: 'train.epochs' must be >= 1, got -10"


def test_unknown_and_retired_keys_are_still_named():
    with pytest.raises(ConfigError, match="unknown key 'train.bach_size'"):
        _set("train.bach_size=010")
    with pytest.raises(ConfigError, match="'train.symmetric' is no longer a setting"):
        _set("train.symmetric=true")
    assert _set("train.symmetric=false") == load_config(TINY)  # at its off value, as in an old model dir
