"""tf.distribute: negatives gathered across replicas, and multi-worker training from TF_CONFIG.

Logical devices and TF_CONFIG must be set before TensorFlow initialises its devices, so
each case runs in fresh Python processes.
"""

import json
import os
import socket
import subprocess
import sys

import numpy as np
import pytest
from conftest import ROOT

GATHER_SCRIPT = r"""
import json, sys
import tensorflow as tf
cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
import numpy as np
import keras
from deepseek_tf.config import config_from_dict
from deepseek_tf.models import build_model

rng = np.random.default_rng(0)
def ids(rows, length):
    return {"token_ids": tf.constant(rows, tf.int32), "padding_mask": tf.ones((len(rows), length), tf.bool),
            "segment_ids": tf.zeros((len(rows), length), tf.int32)}
queries = rng.integers(5, 50, size=(8, 4))
queries[5] = queries[1]  # one query with two judged documents, on different replicas
docs = rng.integers(5, 50, size=(8, 6))
docs[6] = docs[2]  # one document judged for two queries
neg_rows = rng.integers(5, 50, size=(8, 6))
x = {"query": ids(queries, 4), "doc": ids(docs, 6), "neg": ids(neg_rows, 6)}

strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
results = []
for train_cfg in json.loads(sys.argv[1]):
    # "two_negatives": two hard negatives per pair, (8, 2, length) ids, split along the pairs
    x["neg"] = ids(neg_rows, 6)
    if train_cfg.pop("two_negatives", False):
        x["neg"] = {k: tf.reshape(v, [8, 2, 6]) for k, v in ids(rng.integers(5, 50, size=(16, 6)), 6).items()}
    config = config_from_dict({"model": {"num_layers": 1, "hidden_dim": 8, "intermediate_dim": 16, "num_heads": 2,
                                         "max_position": 32, "dropout": 0.0}, "train": train_cfg})
    keras.utils.set_random_seed(1)
    with strategy.scope():
        model = build_model(config, 50)
        model(x)
    reference = build_model(config, 50)
    reference(x)
    reference.set_weights(model.get_weights())

    def dense(grads, weights):
        return [tf.zeros_like(w) if g is None else tf.convert_to_tensor(g) for g, w in zip(grads, weights)]

    with tf.GradientTape() as tape:
        loss_one = reference.compute_loss(x=x, y_pred=reference(x, training=False))
    grads_one = dense(tape.gradient(loss_one, reference.trainable_weights), reference.trainable_weights)

    @tf.function
    def replica_step(xr):
        with tf.GradientTape() as tape:
            loss = model.compute_loss(x=xr, y_pred=model(xr, training=False))
        return loss, dense(tape.gradient(loss, model.trainable_weights), model.trainable_weights)

    def half(ctx):
        r = ctx.replica_id_in_sync_group
        return tf.nest.map_structure(lambda t: t[4 * r : 4 * (r + 1)], x)
    per_replica = strategy.experimental_distribute_values_from_function(half)
    loss_r, grads_r = strategy.run(replica_step, args=(per_replica,))
    # Keras sums replica gradients (and each replica's loss is already divided by 2)
    loss_two = strategy.reduce("SUM", loss_r, axis=None)
    grads_two = [strategy.reduce("SUM", g, axis=None) for g in grads_r]
    results.append({
        "loss_one": float(loss_one), "loss_two": float(loss_two),
        "max_grad_diff": max(float(tf.reduce_max(tf.abs(a - b))) for a, b in zip(grads_one, grads_two)),
        "max_grad": max(float(tf.reduce_max(tf.abs(a))) for a in grads_one),
        "replicas": strategy.num_replicas_in_sync})
print(json.dumps(results))
"""


CASES = [
    {"temperature": 0.5},
    {"temperature": 0.5, "mask_duplicates": False},
    {"temperature": 0.5, "gather_across_replicas": False},
    {"temperature": 0.5, "two_negatives": True},
]


@pytest.fixture(scope="module")
def gather_results() -> list[dict]:
    """One fresh process (2 logical CPUs) runs every case: one TensorFlow start-up, not three."""
    proc = subprocess.run(
        [sys.executable, "-c", GATHER_SCRIPT, json.dumps(CASES)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("case", [0, 1, 3])
def test_two_replicas_match_one_replica_on_the_global_batch(gather_results, case):
    # batch of 8 (a repeated query and a repeated document across the two halves, hard negatives):
    # replicas hold rows 0-3 and 4-7; summed replica losses/gradients = the 1-replica values
    r = gather_results[case]
    assert r["replicas"] == 2
    assert r["loss_two"] == pytest.approx(r["loss_one"], abs=1e-5)
    assert r["max_grad"] > 1e-3 and r["max_grad_diff"] <= 1e-5


def test_without_gathering_two_replicas_differ(gather_results):
    # The check above can fail: each replica alone sees only half the negatives.
    r = gather_results[2]
    assert abs(r["loss_two"] - r["loss_one"]) > 1e-3


def _free_ports(n: int) -> list[int]:
    socks = [socket.socket() for _ in range(n)]
    for s in socks:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


def test_multi_worker_from_tf_config_ends_with_identical_weights(tiny_beir, tmp_path):
    workers = [f"127.0.0.1:{p}" for p in _free_ports(2)]
    procs = []
    for index in range(2):
        tf_config = {"cluster": {"worker": workers}, "task": {"type": "worker", "index": index}}
        env = {**os.environ, "PYTHONPATH": str(ROOT), "TF_CONFIG": json.dumps(tf_config)}
        procs.append(
            subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "deepseek_tf.train",
                    "--config",
                    "configs/tiny.yaml",
                    "--quiet",
                    "--set",
                    f"data.dataset={tiny_beir}",
                    "--set",
                    "train.strategy=multi_worker",
                    "--set",
                    "train.steps_per_epoch=2",
                    "--set",
                    "train.epochs=1",
                    "--set",
                    "model.dropout=0.0",
                    "--workdir",
                    str(tmp_path / f"worker{index}"),
                ],
                cwd=ROOT,
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
        )
    outputs = [p.communicate(timeout=240) for p in procs]
    for p, (out, err) in zip(procs, outputs):
        assert p.returncode == 0, err[-3000:]
        assert "trained 2 steps" in out
    import keras

    import deepseek_tf.models  # noqa: F401  (registers the serializable classes)

    models = [
        keras.models.load_model(tmp_path / f"worker{i}" / "model" / "model.keras", compile=False) for i in range(2)
    ]
    for a, b in zip(models[0].get_weights(), models[1].get_weights()):
        np.testing.assert_array_equal(a, b)
    history = json.loads((tmp_path / "worker0" / "history.json").read_text())
    assert np.isfinite(history["loss"][0])
