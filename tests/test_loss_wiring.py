"""What each loss receives inside `fit`, spied on through the real trainer, and the checks of
GradCache's dropout replay and the model fingerprint that guard against training or serving
the wrong thing."""

import numpy as np
import pytest
import tensorflow as tf
from conftest import ROOT

from deepseek_tf.config import load_config
from deepseek_tf.models import losses
from deepseek_tf.train import train

# Four pairs, one batch: labels 1, 0, 0, 1 in file order (no shuffle: batch_size = all rows).
PAIRS = [
    ("wing lift at low speed", "lift of a wing at low speed is measured", 1),
    ("boundary layer transition", "a recipe for apple pie", 0),
    ("heat transfer in hypersonic flow", "stock prices fell on monday", 0),
    ("shock wave interaction", "shock waves interact with the boundary layer", 1),
]


def _pairs_file(tmp_path, labels=True):
    path = tmp_path / "pairs.tsv"
    head = "query\tdoc_content" + ("\tlabel" if labels else "")
    rows = [f"{q}\t{d}" + (f"\t{y}" if labels else "") for q, d, y in PAIRS]
    path.write_text("\n".join([head, *rows]) + "\n")
    return path


def _spy(monkeypatch, name, arg):
    """Replaces losses.NAME with a wrapper recording its argument ARG (a position or keyword)
    each time the compiled training step runs it."""
    seen, original = [], getattr(losses, name)

    def record(value):
        seen.append(np.asarray(value))
        return np.float32(0)

    def spy(*args, **kwargs):
        value = args[arg] if isinstance(arg, int) else kwargs.get(arg)
        if value is None:
            value = tf.constant(np.nan)
        marker = tf.reshape(tf.numpy_function(record, [value], tf.float32), [])
        return original(*args, **kwargs) + tf.stop_gradient(marker)

    monkeypatch.setattr(losses, name, spy)
    return seen


def _train_pairs(tmp_path, pairs, *overrides):
    config = load_config(
        ROOT / "configs/tiny.yaml",
        [
            "data.dataset=null",
            f"data.pairs={pairs}",
            "data.mine_negatives=false",
            "model.dropout=0.0",
            "train.batch_size=4",
            "train.steps_per_epoch=1",
            "train.epochs=1",
            *overrides,
        ],
    )
    return train(config, tmp_path / "run", verbose=0)


@pytest.mark.parametrize(
    "loss, extra, spied, arg",
    [
        # contrastive: (q, d, labels); the pairs plus one rolled in-batch negative each
        ("contrastive", [], "contrastive", 2),
        # infonce with graded weighting: labels arrive as per-pair weights
        ("infonce", ["train.label_weighting=true"], "infonce", "weights"),
    ],
)
def test_label_taking_losses_receive_the_batch_labels_inside_fit(tmp_path, monkeypatch, loss, extra, spied, arg):
    seen = _spy(monkeypatch, spied, arg)
    _train_pairs(tmp_path, _pairs_file(tmp_path), f"train.loss={loss}", *extra)
    assert seen, f"losses.{spied} was never called inside fit"
    got = sorted(seen[0].tolist())
    if loss == "contrastive":
        # 4 pairs with y = label >= 1 (1, 0, 0, 1 in some order), then 4 negatives with y = 0
        assert len(got) == 8 and sum(got) == 2.0
        assert sorted(seen[0][:4].tolist()) == [0.0, 0.0, 1.0, 1.0] and not seen[0][4:].any()
    else:
        assert got == [0.0, 0.0, 1.0, 1.0]


def test_contrastive_without_labels_still_sees_negatives(tmp_path, monkeypatch):
    seen = _spy(monkeypatch, "contrastive", 2)
    _train_pairs(tmp_path, _pairs_file(tmp_path, labels=False), "train.loss=contrastive")
    assert seen[0].tolist() == [1.0] * 4 + [0.0] * 4  # pairs relevant, next pair's documents not


@pytest.mark.parametrize("name", ["model.keras", "variables.data-00000-of-00001", "towers.query.tflite"])
def test_fingerprint_sees_a_change_past_the_first_mebibyte(tmp_path, name):
    """A fine-tune that keeps file sizes and the first MiB (frozen embeddings stored first) is
    another model: its fingerprint must differ, or an index would serve it."""
    from deepseek_tf.models.loading import weights_fingerprint

    rng = np.random.default_rng(0)
    blob = rng.integers(0, 256, size=(3 << 20), dtype=np.uint8).tobytes()
    before, after = tmp_path / "before", tmp_path / "after"
    for d, tail in ((before, b"\x00"), (after, b"\x01")):
        (d / "variables").mkdir(parents=True)
        target = d / "variables" / name if name.startswith("variables") else d / name
        target.write_bytes(blob + tail)
        (d / "config.yaml").write_text("model: {}\n")
    assert weights_fingerprint(before) != weights_fingerprint(after)
    single = next(p for p in after.rglob(name))
    assert weights_fingerprint(single) != weights_fingerprint(next(p for p in before.rglob(name)))


def test_fingerprint_sees_a_changed_query_prefix(tmp_path):
    """The prefixes live in config.yaml: a model dir that differs only there embeds differently."""
    from deepseek_tf.models.loading import weights_fingerprint

    for name, prefix in (("a", "query: "), ("b", "")):
        (tmp_path / name).mkdir()
        (tmp_path / name / "model.keras").write_bytes(b"PK same weights")
        (tmp_path / name / "config.yaml").write_text(f"model:\n  query_prefix: {prefix!r}\n")
    assert weights_fingerprint(tmp_path / "a") != weights_fingerprint(tmp_path / "b")


@pytest.mark.parametrize(
    "config, overrides, message",
    [
        ("tiny.yaml", ["train.loss=listwise"], "train.loss 'listwise' is a cross-encoder loss"),
        ("tiny.yaml", ["train.loss=contrastive", "train.label_weighting=true"], "label_weighting weights infonce"),
        ("cross_encoder_tiny.yaml", ["train.accumulation_steps=2"], "train.accumulation_steps: dual-encoder"),
        ("cross_encoder_tiny.yaml", ["train.label_weighting=true"], "train.label_weighting: dual-encoder"),
    ],
)
def test_keys_a_model_kind_does_not_use_are_refused(tiny_beir, config, overrides, message):
    from deepseek_tf.errors import ConfigError
    from deepseek_tf.train.run import check_config

    with pytest.raises(ConfigError, match=message):
        check_config(load_config(ROOT / "configs" / config, [f"data.dataset={tiny_beir}", *overrides]))


def test_config_loss_choices_are_the_loss_tables():
    """train.loss's allowed values (and so docs/configuration.md) name exactly the losses the two
    model kinds dispatch; a loss added to a table but not to the config, or the reverse, fails."""
    import dataclasses

    from deepseek_tf.config import TrainConfig
    from deepseek_tf.models.cross_encoder import RANKING_LOSSES
    from deepseek_tf.models.dual_encoder import LOSSES

    choices = next(f for f in dataclasses.fields(TrainConfig) if f.name == "loss").metadata["choices"]
    assert set(choices) == set(LOSSES) | set(RANKING_LOSSES)
