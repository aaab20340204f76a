"""Distillation: Margin-MSE by hand, the teacher's margins, their place in the batch, training."""

import numpy as np
import pytest
import tensorflow as tf
from conftest import ROOT

from deepseek_tf import data as data_lib
from deepseek_tf.config import load_config
from deepseek_tf.errors import ConfigError
from deepseek_tf.models import losses
from deepseek_tf.train import train

TINY_CE = ROOT / "configs" / "cross_encoder_tiny.yaml"


def _config(tiny_beir, *overrides):
    return load_config(
        ROOT / "configs/tiny.yaml",
        [
            f"data.dataset={tiny_beir}",
            "model.dropout=0.0",
            "data.mine_negatives=true",
            "data.hard_negatives=2",
            "data.mine_skip_top=0",
            *overrides,
        ],
    )


def test_margin_mse_by_hand():
    q = tf.constant([[1.0, 0.0], [0.0, 1.0]])
    pos = tf.constant([[1.0, 0.0], [0.6, 0.8]])
    neg = tf.constant([[0.0, 1.0], [0.6, 0.8], [1.0, 0.0], [0.0, 1.0]])  # (B·k, dim), k = 2, pair-major
    teacher = tf.constant([[2.0, 0.0], [0.0, -1.0]])  # (B, k)
    # τ = 0.5. Pair 0: s(q,p) = 1, s(q,n) = 0, 0.6 -> margins 2, 0.8; errors 0, 0.8 -> 0, 0.64
    # pair 1: s(q,p) = 0.8, s(q,n) = 0, 1 -> margins 1.6, −0.4; errors 1.6, 0.6 -> 2.56, 0.36
    # mean of the four: 3.56 / 4 = 0.89
    assert float(losses.margin_mse(q, pos, neg, teacher, temperature=0.5)) == pytest.approx(0.89, abs=1e-6)
    # only margins count: adding a constant to every student score changes nothing, a teacher
    # whose margins equal the student's gives 0
    exact = tf.constant([[2.0, 0.8], [1.6, -0.4]])
    assert float(losses.margin_mse(q, pos, neg, exact, temperature=0.5)) == pytest.approx(0.0, abs=1e-6)


def test_teacher_margins_score_each_distinct_pair_once():
    from deepseek_tf.retrieval.rerank import Reranker
    from deepseek_tf.train.distill import teacher_margins

    seen = []

    def fn(q, d):  # score = length of the document text
        seen.extend(zip(q.numpy().tolist(), d.numpy().tolist()))
        return tf.cast(tf.strings.length(d), tf.float32)

    pairs = data_lib.Pairs(
        ["q1", "q1", "q2"], ["aaaa", "bbbbbb", "aaaa"], [["b", "cc"], ["b", "dddddddd"], ["b", "cc"]]
    )
    margins = teacher_margins(Reranker(fn, "len", batch_size=2), pairs)
    # 4 − 1, 4 − 2 | 6 − 1, 6 − 8 | 4 − 1, 4 − 2
    np.testing.assert_allclose(margins, [[3, 2], [5, -2], [3, 2]])
    # (q1, b) is wanted by pairs 0 and 1 but scored once: 8 distinct pairs of the 9 wanted
    assert len(seen) == len(set(seen)) == 8


def test_teacher_scores_are_cached_by_pair_text_and_by_teacher_weights(tmp_path, monkeypatch):
    from deepseek_tf.retrieval.rerank import Reranker
    from deepseek_tf.train.distill import load_teacher_margins

    scored = []

    def fn(q, d):  # score = length of the document text
        scored.extend(d.numpy().tolist())
        return tf.cast(tf.strings.length(d), tf.float32)

    monkeypatch.setattr(Reranker, "load", classmethod(lambda cls, spec: Reranker(fn, "len", batch_size=4)))
    teacher = tmp_path / "teacher"
    teacher.mkdir()
    (teacher / "model.keras").write_bytes(b"weights v1")

    def margins(pairs):
        scored.clear()
        return load_teacher_margins(str(teacher), pairs, tmp_path / "run", verbose=0)

    a = data_lib.Pairs(["q1", "q2"], ["aaaa", "bbbbbb"], [["b", "cc"], ["b", "ddd"]])
    np.testing.assert_allclose(margins(a), [[3, 2], [5, 3]])  # 4 − 1, 4 − 2 | 6 − 1, 6 − 3
    assert len(scored) == 6
    np.testing.assert_allclose(margins(a), [[3, 2], [5, 3]])  # a resume scores nothing again
    assert scored == []
    # as many pairs, other texts: q1's three pairs come from the cache, q3's are scored
    # (a cache matched by length alone handed back a's margins)
    b = data_lib.Pairs(["q1", "q3"], ["aaaa", "eeeee"], [["b", "cc"], ["b", "ffffffff"]])
    np.testing.assert_allclose(margins(b), [[3, 2], [4, -3]])  # 5 − 1, 5 − 8
    assert sorted(scored) == [b"b", b"eeeee", b"ffffffff"]
    (teacher / "model.keras").write_bytes(b"weights v2")  # a retrained teacher: nothing is reused
    margins(b)
    assert len(scored) == 6


def test_pair_dataset_keeps_each_teacher_row_with_its_pair():
    class Tok:  # a stand-in tokenizer: one token per text, its first character's code
        def __call__(self, texts, length, multiple=1):
            ids = tf.strings.unicode_decode(tf.strings.substr(texts, 0, 1), "UTF-8").to_tensor()
            return {"token_ids": ids, "padding_mask": tf.ones_like(ids, tf.bool), "segment_ids": tf.zeros_like(ids)}

        def tower(self, texts, length, tower, multiple=1):  # no per-tower prefixes
            return self(texts, length, multiple)

    n = 12
    pairs = data_lib.Pairs([chr(65 + i) for i in range(n)], ["d"] * n, [["x", "y"]] * n)
    teacher = np.array([[65 + i, -(65 + i)] for i in range(n)], np.float32)  # row i tied to query chr(65 + i)
    seen = 0
    for batch in data_lib.pair_dataset(pairs, Tok(), 4, 4, 4, seed=3, teacher=teacher):
        codes = batch["query"]["token_ids"][:, 0].numpy()
        np.testing.assert_array_equal(batch["teacher"].numpy(), np.stack([codes, -codes], 1))
        seen += len(codes)
    assert seen == n


def test_distill_weight_adds_margin_mse_to_the_named_loss(tiny_beir):
    from deepseek_tf.models import build_model

    rng = np.random.default_rng(0)
    q, d = tf.math.l2_normalize(rng.normal(size=(3, 4)), -1), tf.math.l2_normalize(rng.normal(size=(3, 4)), -1)
    neg = tf.math.l2_normalize(rng.normal(size=(6, 4)), -1)
    x = {"teacher": tf.constant(rng.normal(size=(3, 2)), tf.float32)}
    y_pred = {"query": tf.cast(q, tf.float32), "doc": tf.cast(d, tf.float32), "neg": tf.cast(neg, tf.float32)}
    out = {}
    for name, sets in {
        "plain": [],
        "weighted": ["train.distill_weight=0.5"],
        "alone": ["train.loss=margin_mse"],
    }.items():
        model = build_model(_config(tiny_beir, "train.mask_duplicates=false", *sets), 50)
        out[name] = float(model.compute_loss(x=x, y_pred=y_pred))
    distill = float(losses.margin_mse(y_pred["query"], y_pred["doc"], y_pred["neg"], x["teacher"], 0.1))
    assert out["weighted"] == pytest.approx(out["plain"] + 0.5 * distill, rel=1e-5)
    assert out["alone"] == pytest.approx(distill, rel=1e-5)
    assert (
        model.get_config()["distill_weight"] == 0.0
        and build_model(_config(tiny_beir, "train.distill_weight=0.5", "train.mask_duplicates=false"), 50).get_config()[
            "distill_weight"
        ]
        == 0.5
    )


@pytest.fixture(scope="module")
def teacher(tiny_ce_run):
    """configs/cross_encoder_tiny.yaml trained on tiny_beir (the session's, shared read-only)."""
    return tiny_ce_run / "model"


@pytest.mark.parametrize(
    "overrides,message",
    [
        (["train.loss=margin_mse"], "need data.teacher"),
        (["train.distill_weight=1.0"], "need data.teacher"),
        (["data.teacher=TEACHER"], "needs train.loss: margin_mse or train.distill_weight"),
        (["data.teacher=TEACHER", "train.distill_weight=-1.0"], "'train.distill_weight' must be >= 0"),
        (["data.teacher=TEACHER", "train.loss=margin_mse", "data.mine_negatives=false"], "scores hard negatives"),
        (["data.teacher=STUDENT", "train.loss=margin_mse"], "data.teacher .*not a cross-encoder"),
        (["data.teacher=/nowhere", "train.loss=margin_mse"], "data.teacher '/nowhere': not a trained cross-encoder"),
    ],
)
def test_bad_distillation_settings_fail_before_anything_is_written(
    tiny_beir, tiny_run, teacher, tmp_path, overrides, message
):
    overrides = [o.replace("TEACHER", str(teacher)).replace("STUDENT", str(tiny_run / "model")) for o in overrides]
    with pytest.raises(ConfigError, match=message):
        train(_config(tiny_beir, *overrides), tmp_path / "run", verbose=0)
    assert not (tmp_path / "run").exists()


def test_cross_encoder_does_not_take_a_teacher(tiny_beir, teacher, tmp_path):
    config = load_config(TINY_CE, [f"data.dataset={tiny_beir}", f"data.teacher={teacher}"])
    with pytest.raises(ConfigError, match="does not take them"):
        train(config, tmp_path / "run", verbose=0)
    assert not (tmp_path / "run").exists()


def test_a_distilled_soup_scores_each_teacher_pair_once(tiny_beir, tiny_run, teacher, tmp_path, monkeypatch):
    from deepseek_tf.retrieval.rerank import Reranker

    calls = []
    score_pairs = Reranker.score_pairs

    def counting(self, queries, docs, progress=False):
        calls.append(len(queries))
        return score_pairs(self, queries, docs, progress)

    monkeypatch.setattr(Reranker, "score_pairs", counting)
    config = _config(
        tiny_beir,
        f"data.teacher={teacher}",
        "train.distill_weight=0.1",
        "train.soup=2",
        f"model.backbone={tiny_run / 'model'}",
        "train.epochs=1",
        "train.steps_per_epoch=2",
    )
    train(config, tmp_path / "soup", verbose=0)
    with np.load(tmp_path / "soup" / "teacher_scores.npz") as f:
        cached = len(f["key"])
    # the members' mined negatives overlap (measured: 111 pairs scored for the first, 43 new
    # ones of the second's 113); no pair is scored twice, each member scores its new ones
    assert len(calls) == 2 and sum(calls) == cached and 0 < calls[1] < calls[0]
    assert not list((tmp_path / "soup" / "members").glob("*/teacher_scores.npz"))


def _student_margins(workdir, config):
    """The saved student's margins (s(q,p) − s(q,n)) / τ on the pairs it trained on, in training order."""
    from deepseek_tf.models.loading import load_trained
    from deepseek_tf.retrieval.embedders import KerasEmbedder
    from deepseek_tf.train.trainer import load_training_pairs

    model, tokenizer, _ = load_trained(workdir / "model")
    embedder = KerasEmbedder(model, tokenizer, config.model.query_max_length, config.model.doc_max_length, "student")
    pairs = load_training_pairs(config)  # the same seeded mining as the run
    q, p = embedder.encode(pairs.queries, "query"), embedder.encode(pairs.docs, "doc")
    negs = np.stack([embedder.encode([n[j] for n in pairs.negs], "doc") for j in range(2)], 1)  # (N, k, dim)
    return ((q * p).sum(-1)[:, None] - np.einsum("nd,nkd->nk", q, negs)) / config.train.temperature


def _cached_margins(teacher, config, workdir):
    """The run's teacher margins, read back from its cache: the teacher is not loaded again."""
    from deepseek_tf.retrieval.rerank import Reranker
    from deepseek_tf.train.distill import load_teacher_margins
    from deepseek_tf.train.trainer import load_training_pairs

    def refuse(cls, spec):
        raise AssertionError(f"the teacher {spec} was loaded again: the run's scores were not cached")

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(Reranker, "load", classmethod(refuse))
        return load_teacher_margins(str(teacher), load_training_pairs(config), workdir, verbose=0)


def test_margin_mse_training_brings_the_students_margins_to_the_teachers(tiny_beir, teacher, tmp_path):
    errors, corr = {}, {}
    for name, lr in (("untrained", "1.0e-12"), ("trained", "3.0e-3")):
        config = _config(
            tiny_beir, "train.loss=margin_mse", f"data.teacher={teacher}", f"train.learning_rate={lr}", "train.epochs=4"
        )
        train(config, tmp_path / name, verbose=0)
        target = _cached_margins(teacher, config, tmp_path / name)  # (N, k), scored once in the run
        assert target.shape == (len(target), 2) and np.abs(target).max() > 0.1
        student = _student_margins(tmp_path / name, config)
        errors[name] = float(np.mean((student - target) ** 2))
        corr[name] = float(np.corrcoef(student.ravel(), target.ravel())[0, 1])
    # Same seed, same initial weights. Measured: MSE 0.107 -> 0.009, correlation 0.08 -> 0.91
    # (InfoNCE with the same steps: MSE 30, correlation 0.03: it is the distillation that aligns them).
    assert errors["trained"] < 0.2 * errors["untrained"], errors
    assert corr["trained"] > 0.8, corr
