"""Training toolkit: schedule, repeatability, dev early stopping, mined negatives, bad options.

Resuming a run is in test_train_resume.py; precision, XLA and oneDNN in test_train_compute.py.
"""

import json

import keras
import numpy as np
import pytest
import tensorflow as tf
from conftest import ROOT, run_cli, run_cli_here

from deepseek_tf.config import load_config
from deepseek_tf.train import train
from deepseek_tf.train.optim import WarmupExponentialDecay


def tiny_config(tiny_beir, *overrides):
    return load_config(
        ROOT / "configs/tiny.yaml",
        [f"data.dataset={tiny_beir}", "model.dropout=0.0", "train.steps_per_epoch=2", *overrides],
    )


def model_weights(workdir):
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
        train(tiny_config(tiny_beir, "train.epochs=1", "model.dropout=0.1"), tmp_path / f"r{i}", verbose=0)
        for i in range(2)
    ]
    assert runs[0]["loss"] == runs[1]["loss"]
    for a, b in zip(model_weights(tmp_path / "r0"), model_weights(tmp_path / "r1")):
        np.testing.assert_array_equal(a, b)
    other = train(
        tiny_config(tiny_beir, "train.epochs=1", "model.dropout=0.1", "train.seed=7"), tmp_path / "r2", verbose=0
    )
    assert other["loss"] != runs[0]["loss"]


def test_dev_early_stopping_keeps_the_best_epoch(tiny_beir, tmp_path):
    # learning rate 1e-12 (steps below float32 resolution; 0 is not a valid rate): dev nDCG@10
    # never improves after epoch 1, so patience 1 stops after epoch 2
    history = train(
        tiny_config(
            tiny_beir, "train.epochs=5", "data.dev_fraction=0.25", "train.patience=1", "train.learning_rate=1e-12"
        ),
        tmp_path,
        verbose=0,
    )
    assert history["steps"] == [4]  # 2 epochs of 2 steps, not 5
    assert len(history["dev_ndcg@10"]) == 2 and history["dev_ndcg@10"][0] == history["dev_ndcg@10"][1]
    best = json.loads((tmp_path / "best" / "best.json").read_text())
    assert best["epoch"] == 1 and best["wait"] == 1 and 0.0 < best["dev_ndcg@10"] <= 1.0
    # resuming an exhausted run trains no further
    again = train(
        tiny_config(
            tiny_beir, "train.epochs=5", "data.dev_fraction=0.25", "train.patience=1", "train.learning_rate=1e-12"
        ),
        tmp_path,
        verbose=0,
    )
    assert again["steps"] == [4]


def test_dev_queries_follow_data_dev_seed_not_the_training_seed(tiny_beir):
    from deepseek_tf.train.trainer import load_training_data

    def dev_queries(*overrides):
        return set(load_training_data(tiny_config(tiny_beir, "data.dev_fraction=0.25", *overrides))[2].qrels)

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
    config = tiny_config(None, "train.mask_duplicates=false")
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
        tiny_config(
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
    # trained in bfloat16, saved as float32 (float32_copy: test_train_compute.py)
    assert model.query_encoder.backbone.dtype_policy.name == "float32"


def test_bad_accumulation_is_a_config_error(tiny_beir, tmp_path):
    from deepseek_tf.errors import ConfigError

    with pytest.raises(ConfigError, match="multiple of"):
        train(tiny_config(tiny_beir, "train.accumulation_steps=3"), tmp_path, verbose=0)


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
        train(tiny_config(tiny_beir, "data.mine_negatives=true", override), tmp_path / "run", verbose=0)
    assert not (tmp_path / "run").exists()
