"""Training toolkit: schedule, repeatability, resume, dev early stopping, mining, precision."""

import json
import os
import platform
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf
from conftest import ROOT, run_cli, run_cli_here

from deepseek_tf.config import load_config
from deepseek_tf.errors import UserError
from deepseek_tf.train import train
from deepseek_tf.train.optim import WarmupExponentialDecay


def _config(tiny_beir, *overrides):
    return load_config(
        ROOT / "configs/tiny.yaml",
        [f"data.dataset={tiny_beir}", "model.dropout=0.0", "train.steps_per_epoch=2", *overrides],
    )


def _weights(workdir):
    model = keras.models.load_model(workdir / "model" / "model.keras", compile=False)
    return model.get_weights()


def test_warmup_then_exponential_decay_values():
    lr = WarmupExponentialDecay(peak=1e-3, warmup_steps=4, decay_steps=10, decay_rate=0.5)
    # warm-up: peak·(s+1)/4 -> 2.5e-4, 5e-4, 7.5e-4, 1e-3 at steps 0..3
    np.testing.assert_allclose([float(lr(s)) for s in range(4)], [2.5e-4, 5e-4, 7.5e-4, 1e-3], rtol=1e-6)
    # decay: peak·0.5^((s−4)/10) -> s=4: 1e-3; s=14: 5e-4; s=24: 2.5e-4; s=9: 1e-3·0.5^0.5 = 7.0711e-4
    np.testing.assert_allclose([float(lr(s)) for s in (4, 14, 24, 9)], [1e-3, 5e-4, 2.5e-4, 7.0710678e-4], rtol=1e-6)
    again = WarmupExponentialDecay.from_config(lr.get_config())
    assert float(again(14)) == pytest.approx(5e-4)


def test_same_seed_same_weights(tiny_beir, tmp_path):
    runs = [
        train(_config(tiny_beir, "train.epochs=1", "model.dropout=0.1"), tmp_path / f"r{i}", verbose=0)
        for i in range(2)
    ]
    assert runs[0]["loss"] == runs[1]["loss"]
    for a, b in zip(_weights(tmp_path / "r0"), _weights(tmp_path / "r1")):
        np.testing.assert_array_equal(a, b)
    other = train(_config(tiny_beir, "train.epochs=1", "model.dropout=0.1", "train.seed=7"), tmp_path / "r2", verbose=0)
    assert other["loss"] != runs[0]["loss"]


def test_resume_continues_optimizer_schedule_and_data(tiny_beir, tmp_path):
    """Stopping after one epoch and resuming lands on the weights of the uninterrupted run:
    step count, learning-rate schedule, Adam moments and the data stream all continue."""
    straight = train(_config(tiny_beir, "train.epochs=2"), tmp_path / "straight", verbose=0)
    train(_config(tiny_beir, "train.epochs=1"), tmp_path / "resumed", verbose=0)
    resumed = train(_config(tiny_beir, "train.epochs=2"), tmp_path / "resumed", verbose=0)
    assert straight["steps"] == resumed["steps"] == [4]
    assert len(resumed["loss"]) == 2 and np.all(np.isfinite(resumed["loss"]))
    np.testing.assert_allclose(resumed["loss"], straight["loss"], rtol=1e-5)
    for a, b in zip(_weights(tmp_path / "straight"), _weights(tmp_path / "resumed")):
        np.testing.assert_allclose(a, b, atol=1e-5)


def test_resume_with_self_mined_negatives_keeps_them(tiny_beir, tmp_path):
    """Negatives mined from the model's start point are mined once and kept in the workdir: a
    resumed run trains on them (not on none, nor on negatives from its trained weights) and lands
    on the uninterrupted run's weights; a run that lacks them is refused, not trained otherwise."""
    mined = ["data.mine_negatives=true", "data.negatives_from=self", "data.mine_top_k=10"]
    straight = train(_config(tiny_beir, "train.epochs=2", *mined), tmp_path / "straight", verbose=0)
    train(_config(tiny_beir, "train.epochs=1", *mined), tmp_path / "resumed", verbose=0)
    saved = json.loads((tmp_path / "resumed" / "self_negatives.json").read_text(encoding="utf-8"))
    assert saved["pairs"]["negs"] and saved["pairs"]["neg_ids"]
    resumed = train(_config(tiny_beir, "train.epochs=2", *mined), tmp_path / "resumed", verbose=0)
    np.testing.assert_allclose(resumed["loss"], straight["loss"], rtol=1e-5)
    for a, b in zip(_weights(tmp_path / "straight"), _weights(tmp_path / "resumed")):
        np.testing.assert_allclose(a, b, atol=1e-5)
    (tmp_path / "resumed" / "self_negatives.json").unlink()
    with pytest.raises(UserError, match="self_negatives.json"):
        train(_config(tiny_beir, "train.epochs=3", *mined), tmp_path / "resumed", verbose=0)


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
            runs[recipe] = train(config, workdir, verbose=0), _weights(workdir)
        return runs[recipe]

    return straight


def test_resume_mid_epoch_from_step_checkpoint(tiny_beir, tmp_path, uninterrupted):
    base = STEP_CHECKPOINTS[1:]
    straight, weights = uninterrupted("tiny.yaml")  # _config(tiny_beir, *base): the same run
    train(_config(tiny_beir, *base[1:], "train.epochs=1"), tmp_path / "b", verbose=0)
    # drop the epoch-end checkpoint so the newest one is mid-way: step 2 of 3
    state = tf.train.get_checkpoint_state(str(tmp_path / "b" / "checkpoints"))
    assert state.model_checkpoint_path.endswith("ckpt-3")
    (tmp_path / "b" / "checkpoints" / "checkpoint").write_text(
        'model_checkpoint_path: "ckpt-2"\nall_model_checkpoint_paths: "ckpt-2"\n'
    )
    resumed = train(_config(tiny_beir, *base), tmp_path / "b", verbose=0)
    assert resumed["steps"] == straight["steps"] == [6]
    for a, b in zip(weights, _weights(tmp_path / "b"), strict=True):
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
    for a, b in zip(weights, _weights(tmp_path / "b"), strict=True):
        np.testing.assert_allclose(a, b, atol=1e-5)


def test_dev_early_stopping_keeps_the_best_epoch(tiny_beir, tmp_path):
    # learning rate 1e-12 (steps below float32 resolution; 0 is not a valid rate): dev nDCG@10
    # never improves after epoch 1, so patience 1 stops after epoch 2
    history = train(
        _config(tiny_beir, "train.epochs=5", "data.dev_fraction=0.25", "train.patience=1", "train.learning_rate=1e-12"),
        tmp_path,
        verbose=0,
    )
    assert history["steps"] == [4]  # 2 epochs of 2 steps, not 5
    assert len(history["dev_ndcg@10"]) == 2 and history["dev_ndcg@10"][0] == history["dev_ndcg@10"][1]
    best = json.loads((tmp_path / "best" / "best.json").read_text())
    assert best["epoch"] == 1 and best["wait"] == 1 and 0.0 < best["dev_ndcg@10"] <= 1.0
    # resuming an exhausted run trains no further
    again = train(
        _config(tiny_beir, "train.epochs=5", "data.dev_fraction=0.25", "train.patience=1", "train.learning_rate=1e-12"),
        tmp_path,
        verbose=0,
    )
    assert again["steps"] == [4]


def test_dev_queries_follow_data_dev_seed_not_the_training_seed(tiny_beir):
    from deepseek_tf.train.trainer import load_training_data

    def dev_queries(*overrides):
        return set(load_training_data(_config(tiny_beir, "data.dev_fraction=0.25", *overrides))[2].qrels)

    # a soup's members (seeds 42, 43, ...) and the two stages of a pipeline hold out the same queries
    assert len(dev_queries()) == 3 and dev_queries("train.seed=43") == dev_queries()
    assert dev_queries("data.dev_seed=7") != dev_queries()


def test_best_checkpoint_is_what_model_dir_holds(tiny_beir, tmp_path):
    from deepseek_tf.train.callbacks import DevEvaluator

    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    model.compile(optimizer="sgd")
    scores = iter([0.5, 0.7, 0.6, 0.65])
    evaluator = DevEvaluator(lambda: next(scores), tmp_path / "best", 2, model)
    evaluator.set_model(model)
    kept = None
    for epoch in range(4):
        model.layers[0].kernel.assign([[float(epoch)], [float(epoch)]])
        evaluator.on_epoch_end(epoch, {})
        if epoch == 1:
            kept = model.get_weights()
    assert model.stop_training  # epochs 3 and 4 brought nothing: patience 2 exhausted
    tf.train.Checkpoint(model=model).restore(evaluator.manager.latest_checkpoint).expect_partial()
    np.testing.assert_array_equal(model.get_weights()[0], kept[0])
    assert evaluator.state == {"dev_ndcg@10": 0.7, "epoch": 2, "step": 0, "wait": 2}


def test_mined_negatives_guards(tiny_beir):
    from deepseek_tf.data import load_beir
    from deepseek_tf.retrieval.mining import mine, mine_negatives

    ds = load_beir(tiny_beir, "train")
    mined = mine(ds, "bm25", top_k=10, skip_top=1, margin=0.05)
    assert len(mined.pairs) == 48 and mined.pairs.negs is not None  # 12 queries x 4 judged docs
    for qid, _pos, neg in mined.pair_ids:
        assert ds.qrels[qid].get(neg, 0) < 1  # never a judged-relevant document
    # Hand-built scores for one query with positives p1 (score 1.0) and p2 (0.5);
    # ranking: p1, a, b, c, p2, e.
    from deepseek_tf.data import BeirDataset

    corpus = {k: {"title": "", "text": k} for k in ("p1", "a", "b", "c", "p2", "e")}
    toy = BeirDataset(corpus, {"q": "q"}, {"q": {"p1": 2, "p2": 1}})
    doc_ids = list(corpus)
    scores = np.array([[1.0, 0.99, 0.9, 0.6, 0.5, 0.1]])
    got = mine_negatives(toy, scores, ["q"], doc_ids, top_k=6, skip_top=2, margin=0.05)
    # skip ranks 1-2 (p1, a); candidates b, c, e (p2 is judged). For p1 (score 1.0, ceiling
    # 0.95): b, c, e allowed. For p2 (0.5, ceiling 0.475): only e.
    negs = {pos: neg for _, pos, neg in got.pair_ids}
    assert negs["p1"] in {"b", "c", "e"} and negs["p2"] == "e" and got.fallbacks == 0
    got = mine_negatives(
        toy, np.array([[1.0, 0.99, 0.98, 0.97, 0.96, 0.95]]), ["q"], doc_ids, top_k=6, skip_top=2, margin=0.5
    )
    assert got.fallbacks == 2  # nothing below half the positive's score: random unjudged docs
    assert all(neg not in ("p1", "p2") for _, _, neg in got.pair_ids)


def test_several_mined_negatives_per_pair_are_distinct_and_guarded():
    from deepseek_tf.data import BeirDataset
    from deepseek_tf.retrieval.mining import mine_negatives

    corpus = {k: {"title": "", "text": k} for k in ("p1", "a", "b", "c", "p2", "e")}
    toy = BeirDataset(corpus, {"q": "q"}, {"q": {"p1": 2, "p2": 1}})
    scores = np.array([[1.0, 0.99, 0.9, 0.6, 0.5, 0.1]])  # as above: p1 may take b, c, e; p2 only e
    got = mine_negatives(toy, scores, ["q"], list(corpus), top_k=6, skip_top=2, margin=0.05, per_pair=2)
    negs = {pos: neg for _, pos, neg in got.pair_ids}
    assert len(set(negs["p1"])) == 2 and set(negs["p1"]) <= {"b", "c", "e"}
    # p2: e, then nothing else passes the guards -> one random unjudged document (a, b or c)
    assert negs["p2"][0] == "e" and negs["p2"][1] in {"a", "b", "c"} and got.fallbacks == 1
    assert got.pairs.negs[0] == list(negs[got.pair_ids[0][1]])  # texts, in the same order


def test_k_negatives_per_pair_join_the_candidates_pair_major():
    from deepseek_tf.data import Pairs, pair_dataset
    from deepseek_tf.models import build_model, losses
    from deepseek_tf.text.tokenizer import Tokenizer

    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "a", "b", "c", "d"]
    pairs = Pairs(["a", "b"], ["a b", "b c"], [["c", "d d"], ["d", "a c"]])
    batch = next(iter(pair_dataset(pairs, Tokenizer(vocab), 2, 8, 8, shuffle=False)))
    assert batch["neg"]["token_ids"].shape[:2] == (2, 2)  # (pairs, k, length)
    config = _config(None, "train.mask_duplicates=false")
    model = build_model(config, len(vocab))
    out = model(batch)
    flat = {k: tf.reshape(v, [4, -1]) for k, v in batch["neg"].items()}
    np.testing.assert_allclose(out["neg"].numpy(), model.doc_tower(flat).numpy(), atol=1e-6)  # rows c, dd, d, ac
    want = losses.infonce(out["query"], out["doc"], out["neg"], temperature=config.train.temperature)
    assert float(model.compute_loss(x=batch, y_pred=out)) == pytest.approx(float(want), abs=1e-6)


def test_mining_cli_writes_pairs_the_trainer_reads(tiny_beir, tmp_path):
    from deepseek_tf.data import read_pairs

    out = tmp_path / "mined.tsv"
    proc = run_cli_here(
        "deepseek_tf.cli", "mine", "--dataset", str(tiny_beir), "--top-k", "10", "--skip-top", "1", "--output", str(out)
    )
    assert proc.returncode == 0, proc.stderr
    pairs = read_pairs(out, verbose=False)
    assert len(pairs) == 48 and pairs.negs is not None and len(pairs.labels) == 48
    proc = run_cli(
        "deepseek_tf.cli", "mine", "--dataset", str(tiny_beir), "--top-k", "2", "--skip-top", "3", "--output", str(out)
    )
    assert proc.returncode == 1 and proc.stderr.strip().startswith("error: mining: top_k")


def test_mined_hard_negatives_with_grad_cache_and_bf16(tiny_beir, tmp_path):
    history = train(
        _config(
            tiny_beir,
            "train.epochs=1",
            "data.mine_negatives=true",
            "data.mine_top_k=10",
            "data.mine_skip_top=1",
            "train.accumulation_steps=2",
            "train.mixed_precision=mixed_bfloat16",
        ),
        tmp_path,
        verbose=0,
    )
    assert history["steps"] == [2] and np.all(np.isfinite(history["loss"]))
    assert keras.config.dtype_policy().name == "float32"  # the global policy is restored
    model = keras.models.load_model(tmp_path / "model" / "model.keras", compile=False)
    # trained in bfloat16, saved as float32 (float32_copy below)
    assert model.query_encoder.backbone.dtype_policy.name == "float32"


# /proc/cpuinfo excerpts: a 2-core AMD EPYC (Zen 2) VM, an Intel Sapphire Rapids VM, an Arm v8.6 core
ZEN2 = "processor\t: 0\nvendor_id\t: AuthenticAMD\nflags\t\t: fpu sse4_2 avx avx2 fma bmi2 sha_ni\n"
SAPPHIRE_RAPIDS = "flags\t\t: fpu avx2 avx512f avx512_vnni avx512_bf16 amx_bf16 amx_tile amx_int8\n"
ARM_V86 = "processor\t: 0\nFeatures\t: fp asimd aes sha2 i8mm bf16\nCPU implementer\t: 0x41\n"


def test_mixed_precision_auto_uses_bfloat16_only_where_the_cpu_has_it(capsys):
    from deepseek_tf.train.compute import cpu_has_native_bf16, precision_policy

    assert [cpu_has_native_bf16(x) for x in (ZEN2, SAPPHIRE_RAPIDS, ARM_V86, "")] == [False, True, True, False]
    # a flag name elsewhere on a line other than flags/Features does not count
    assert not cpu_has_native_bf16("model name\t: bf16 amx_bf16 lookalike\nflags\t\t: avx2\n")
    assert precision_policy("auto", SAPPHIRE_RAPIDS) == "mixed_bfloat16"
    assert precision_policy("auto", ZEN2) is None and precision_policy("none", SAPPHIRE_RAPIDS) is None
    assert capsys.readouterr().err == ""
    # asked for explicitly, bfloat16 is kept on any CPU, with a one-line warning where it is emulated
    assert precision_policy("mixed_bfloat16", SAPPHIRE_RAPIDS) == "mixed_bfloat16"
    assert capsys.readouterr().err == ""
    assert precision_policy("mixed_bfloat16", ZEN2) == "mixed_bfloat16"
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("warning: train.mixed_precision mixed_bfloat16 on a CPU without")


def test_float32_copy_keeps_mixed_precision_weights(tiny_beir):
    from deepseek_tf.text.tokenizer import Tokenizer
    from deepseek_tf.train.compute import build_in_policy, float32_copy, set_dropout

    config = _config(tiny_beir)
    tokenizer = Tokenizer(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "wing", "flow", "heat"])
    sample = {k: tokenizer(tf.constant(["wing flow", "heat"]), 8) for k in ("query", "doc")}
    mixed = build_in_policy(config, tokenizer.vocab_size, "mixed_bfloat16")
    assert keras.config.dtype_policy().name == "float32"  # the global policy is restored
    mixed(sample)
    assert set_dropout(mixed, 0.3) > 0
    copy = float32_copy(mixed, config, tokenizer.vocab_size, sample)
    assert {layer.dtype_policy.name for layer in copy._flatten_layers()} == {"float32"}
    # the dropout rates it trained with travel too (config.model.dropout is 0.0 here)
    assert {layer.rate for layer in copy._flatten_layers() if isinstance(layer, keras.layers.Dropout)} == {0.3}
    assert "mixed_bfloat16" in {layer.dtype_policy.name for layer in mixed._flatten_layers()}
    for a, b in zip(mixed.get_weights(), copy.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)
    want = mixed.query_encoder(sample["query"], training=False)
    got = copy.query_encoder(sample["query"], training=False)
    # bfloat16 keeps ~3 significant digits: the same unit vectors to about 1e-2, not exactly
    assert not np.array_equal(got.numpy(), want.numpy())
    np.testing.assert_allclose(got.numpy(), want.numpy(), atol=3e-2)


def test_bad_accumulation_is_a_config_error(tiny_beir, tmp_path):
    from deepseek_tf.errors import ConfigError

    with pytest.raises(ConfigError, match="multiple of"):
        train(_config(tiny_beir, "train.accumulation_steps=3"), tmp_path, verbose=0)


@pytest.mark.parametrize(
    "override,message",
    [
        ("data.hard_negatives=0", "'data.hard_negatives' must be >= 1"),
        ("data.judged_negatives=2", "must be at most data.hard_negatives"),
    ],
)
def test_bad_training_options_fail_before_anything_is_written(tiny_beir, tmp_path, override, message):
    from deepseek_tf.errors import ConfigError

    with pytest.raises(ConfigError, match=message):  # the first when the config loads, the second in train
        train(_config(tiny_beir, "data.mine_negatives=true", override), tmp_path / "run", verbose=0)
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("yaml", ["tiny.yaml", "cross_encoder_tiny.yaml"])
def test_build_in_policy_gives_a_pretrained_backbone_model_dropout(tiny_run, tiny_beir, yaml):
    # the tiny run's tower was saved with dropout 0.1; both trainers build through here, so
    # model.dropout must replace the saved rates for a dual encoder and a cross-encoder alike
    from deepseek_tf.train.compute import build_in_policy, dropout_layers

    vocab_size = sum(1 for _ in open(tiny_run / "model" / "vocab.txt"))
    config = load_config(
        ROOT / "configs" / yaml,
        [f"data.dataset={tiny_beir}", f"model.backbone={tiny_run / 'model'}", "model.dropout=0.25"],
    )
    model = build_in_policy(config, vocab_size, None)
    assert {layer.rate for layer in dropout_layers(model)} == {0.25}


def test_jit_compile_auto_uses_xla_for_cross_encoders_on_cpus_in_float32_only(monkeypatch):
    from deepseek_tf.train.compute import XLA_PAD_MULTIPLE, jit_policy, pad_multiple

    ce, de = ("mirrored", "cross_encoder"), ("mirrored", "dual_encoder")
    assert jit_policy("auto", None, *ce) is True  # this test machine: CPU, float32
    assert jit_policy("auto", None, *de) is False  # measured: no gain for the dual encoder
    assert jit_policy("auto", "mixed_bfloat16", *ce) is False  # bfloat16 under XLA on a CPU: never measured
    assert jit_policy("auto", None, "multi_worker", "cross_encoder") is False  # collectives fail to compile
    assert jit_policy("xla", "mixed_bfloat16", *de) is True and jit_policy("none", None, *ce) is False
    assert pad_multiple(False) == 1 and pad_multiple(True) == pad_multiple("auto") == XLA_PAD_MULTIPLE
    monkeypatch.setattr(tf.config, "list_physical_devices", lambda kind=None: ["GPU:0"] if kind == "GPU" else [])
    assert jit_policy("auto", None, *de) == "auto"  # Keras decides on GPUs


@pytest.mark.parametrize("kind", ["dual_encoder", "cross_encoder"])
def test_xla_training_matches_the_plain_step(tiny_beir, tmp_path, kind, monkeypatch):
    """train.jit_compile: xla compiles the same step (losses to float rounding) on widened batches."""
    from deepseek_tf.train import train

    asked = []
    compile_ = keras.Model.compile
    monkeypatch.setattr(
        keras.Model, "compile", lambda self, *a, **k: (asked.append(k.get("jit_compile")), compile_(self, *a, **k))[1]
    )
    if kind == "dual_encoder":
        configs = lambda jit: _config(
            tiny_beir, "train.epochs=1", "train.steps_per_epoch=3", f"train.jit_compile={jit}"
        )
    else:
        configs = lambda jit: load_config(
            ROOT / "configs/cross_encoder_tiny.yaml",
            [
                f"data.dataset={tiny_beir}",
                "model.dropout=0.0",
                "train.epochs=1",
                "train.steps_per_epoch=3",
                f"train.jit_compile={jit}",
            ],
        )
    xla = train(configs("xla"), tmp_path / "xla", verbose=0)
    plain = train(configs("none"), tmp_path / "plain", verbose=0)
    assert asked == [True, False]
    assert xla["loss"][0] != 0 and xla["loss"][0] == pytest.approx(plain["loss"][0], rel=1e-4)


@pytest.mark.skipif(platform.machine() not in ("x86_64", "AMD64"), reason="oneDNN's switch is x86's")
def test_importing_deepseek_tf_turns_onednn_on_unless_the_user_said_otherwise():
    # TensorFlow leaves oneDNN off on CPUs without VNNI/bfloat16 (this 2-core Zen 2 EPYC), where it
    # made training 1.57x faster; an explicit TF_ENABLE_ONEDNN_OPTS=0 must still win.
    import subprocess

    probe = "import deepseek_tf; from tensorflow.python.util import _pywrap_util_port as p; print(p.IsMklEnabled())"
    env = {k: v for k, v in os.environ.items() if k != "TF_ENABLE_ONEDNN_OPTS"}
    on = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, env=env, check=True)
    off = subprocess.run(
        [sys.executable, "-c", probe],
        capture_output=True,
        text=True,
        env={**env, "TF_ENABLE_ONEDNN_OPTS": "0"},
        check=True,
    )
    assert (on.stdout.strip(), off.stdout.strip()) == ("True", "False")
