"""Resuming a training run: after an epoch, mid-epoch from a step checkpoint, after a kill, and
with self-mined negatives; each lands on the weights of the uninterrupted run."""

import json

import numpy as np
import pytest
import tensorflow as tf
from conftest import ROOT
from test_train import model_weights, tiny_config

from deepseek_tf.config import load_config
from deepseek_tf.errors import UserError
from deepseek_tf.train import train


def test_resume_continues_optimizer_schedule_and_data(tiny_beir, tmp_path):
    """Stopping after one epoch and resuming lands on the weights of the uninterrupted run:
    step count, learning-rate schedule, Adam moments and the data stream all continue."""
    straight = train(tiny_config(tiny_beir, "train.epochs=2"), tmp_path / "straight", verbose=0)
    train(tiny_config(tiny_beir, "train.epochs=1"), tmp_path / "resumed", verbose=0)
    resumed = train(tiny_config(tiny_beir, "train.epochs=2"), tmp_path / "resumed", verbose=0)
    assert straight["steps"] == resumed["steps"] == [4]
    assert len(resumed["loss"]) == 2 and np.all(np.isfinite(resumed["loss"]))
    np.testing.assert_allclose(resumed["loss"], straight["loss"], rtol=1e-5)
    for a, b in zip(model_weights(tmp_path / "straight"), model_weights(tmp_path / "resumed")):
        np.testing.assert_allclose(a, b, atol=1e-5)


def test_resume_with_self_mined_negatives_keeps_them(tiny_beir, tmp_path):
    """Negatives mined from the model's start point are mined once and kept in the workdir: a
    resumed run trains on them (not on none, nor on negatives from its trained weights) and lands
    on the uninterrupted run's weights; a run that lacks them is refused, not trained otherwise."""
    mined = ["data.mine_negatives=true", "data.negatives_from=self", "data.mine_top_k=10"]
    straight = train(tiny_config(tiny_beir, "train.epochs=2", *mined), tmp_path / "straight", verbose=0)
    train(tiny_config(tiny_beir, "train.epochs=1", *mined), tmp_path / "resumed", verbose=0)
    saved = json.loads((tmp_path / "resumed" / "self_negatives.json").read_text(encoding="utf-8"))
    assert saved["pairs"]["negs"] and saved["pairs"]["neg_ids"]
    resumed = train(tiny_config(tiny_beir, "train.epochs=2", *mined), tmp_path / "resumed", verbose=0)
    np.testing.assert_allclose(resumed["loss"], straight["loss"], rtol=1e-5)
    for a, b in zip(model_weights(tmp_path / "straight"), model_weights(tmp_path / "resumed")):
        np.testing.assert_allclose(a, b, atol=1e-5)
    (tmp_path / "resumed" / "self_negatives.json").unlink()
    with pytest.raises(UserError, match="self_negatives.json"):
        train(tiny_config(tiny_beir, "train.epochs=3", *mined), tmp_path / "resumed", verbose=0)


STEP_CHECKPOINTS = ["model.dropout=0.0", "train.epochs=2", "train.steps_per_epoch=3", "train.checkpoint_every=1"]


@pytest.fixture(scope="module")
def uninterrupted(tiny_beir, tmp_path_factory):
    """straight(recipe): the uninterrupted run of `recipe` with STEP_CHECKPOINTS (2 epochs of 3
    steps, a checkpoint after every step), trained once: (its history, its model's weights)."""
    runs = {}

    def straight(recipe: str):
        if recipe not in runs:
            workdir = tmp_path_factory.mktemp("straight")
            config = load_config(ROOT / "configs" / recipe, [f"data.dataset={tiny_beir}", *STEP_CHECKPOINTS])
            runs[recipe] = train(config, workdir, verbose=0), model_weights(workdir)
        return runs[recipe]

    return straight


def test_resume_mid_epoch_from_step_checkpoint(tiny_beir, tmp_path, uninterrupted):
    base = STEP_CHECKPOINTS[1:]
    straight, weights = uninterrupted("tiny.yaml")  # tiny_config(tiny_beir, *base): the same run
    train(tiny_config(tiny_beir, *base[1:], "train.epochs=1"), tmp_path / "b", verbose=0)
    # drop the epoch-end checkpoint so the newest one is mid-way: step 2 of 3
    state = tf.train.get_checkpoint_state(str(tmp_path / "b" / "checkpoints"))
    assert state.model_checkpoint_path.endswith("ckpt-3")
    (tmp_path / "b" / "checkpoints" / "checkpoint").write_text(
        'model_checkpoint_path: "ckpt-2"\nall_model_checkpoint_paths: "ckpt-2"\n'
    )
    resumed = train(tiny_config(tiny_beir, *base), tmp_path / "b", verbose=0)
    assert resumed["steps"] == straight["steps"] == [6]
    for a, b in zip(weights, model_weights(tmp_path / "b"), strict=True):
        np.testing.assert_allclose(a, b, atol=1e-5)


class _Killed(Exception):
    pass


@pytest.mark.parametrize("recipe", ["tiny.yaml", "cross_encoder_tiny.yaml"])  # one skeleton, both kinds
def test_a_run_killed_mid_epoch_resumes_to_the_uninterrupted_weights(
    tiny_beir, tmp_path, monkeypatch, uninterrupted, recipe
):
    """A run dies after step 4's checkpoint (mid-way through epoch 2); the same command again
    continues from there on the batches not yet seen and ends on the uninterrupted weights."""
    from deepseek_tf.train.callbacks import Checkpointer

    config = load_config(ROOT / "configs" / recipe, [f"data.dataset={tiny_beir}", *STEP_CHECKPOINTS])
    straight, weights = uninterrupted(recipe)
    save = Checkpointer.on_train_batch_end

    def dies_after_step_4(self, batch, logs=None):
        save(self, batch, logs)
        if int(self.model.optimizer.iterations.numpy()) == 4:
            raise _Killed

    monkeypatch.setattr(Checkpointer, "on_train_batch_end", dies_after_step_4)
    with pytest.raises(_Killed):
        train(config, tmp_path / "b", verbose=0)
    monkeypatch.undo()
    resumed = train(config, tmp_path / "b", verbose=0)
    assert resumed["steps"] == straight["steps"] == [6]
    for a, b in zip(weights, model_weights(tmp_path / "b"), strict=True):
        np.testing.assert_allclose(a, b, atol=1e-5)
