"""Cross-encoder reranker: losses by hand, mined training groups, save/reload parity,
learning on a fixed batch, reranking and fusion by hand, training options (precision, dropout).
The retrieve -> rerank -> export path through the commands is in test_rerank_pipeline.py."""

import numpy as np
import pytest
import tensorflow as tf
from conftest import ROOT

from deepseek_tf.config import config_from_dict, load_config
from deepseek_tf.errors import ConfigError, UserError
from deepseek_tf.models import losses

TINY = ROOT / "configs" / "cross_encoder_tiny.yaml"
VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
VOCAB += "summer dress laptop light cotton tent camping coffee espresso shoes running for a the best".split()


# ------------------------------------------------------------------ losses, by hand
def test_pointwise_bce_uses_graded_targets():
    # logits 0 -> σ = 0.5; targets 4/4 = 1 and 0/4 = 0: each term is log 2
    assert losses.pointwise_bce(tf.constant([[0.0, 0.0]]), tf.constant([[4, 0]])).numpy() == pytest.approx(np.log(2))
    # grade 2 -> target 0.5; logit 2: softplus(2) − 0.5·2 = 2.126928 − 1 = 1.126928
    assert losses.pointwise_bce(tf.constant([[2.0]]), tf.constant([[2]])).numpy() == pytest.approx(1.126928, abs=1e-6)
    # grade 1 is not grade 4: flattening to binary would give softplus(−2) = 0.126928 for both
    low = losses.pointwise_bce(tf.constant([[2.0]]), tf.constant([[1]])).numpy()
    assert low == pytest.approx(2.126928 - 0.25 * 2, abs=1e-6)


def test_ranknet_and_hinge_over_graded_pairs():
    s, g = tf.constant([[1.0, 0.0, 2.0]]), tf.constant([[2, 0, 1]])
    # ordered pairs g_i > g_j: (0,1) diff 1, (0,2) diff −1, (2,1) diff 2
    # RankNet: [softplus(−1) + softplus(1) + softplus(−2)] / 3 = (0.313262 + 1.313262 + 0.126928) / 3
    assert losses.ranknet(s, g).numpy() == pytest.approx(1.753452 / 3, abs=1e-6)
    # hinge, margin 1: max(0, 1−1) + max(0, 1+1) + max(0, 1−2) = 2, over 3 pairs
    assert losses.pairwise_hinge(s, g, margin=1.0).numpy() == pytest.approx(2 / 3, abs=1e-6)
    # a group whose documents all share one grade has no pairs: loss 0, not NaN
    assert losses.ranknet(s, tf.constant([[1, 1, 1]])).numpy() == 0.0


def test_listwise_softmax_one_positive_and_graded():
    # 1 positive + 2 negatives, logits [2, 0, 0]: −log(e²/(e² + 2)) = log(1 + 2e⁻²) = 0.239545
    assert losses.listwise_softmax(tf.constant([[2.0, 0.0, 0.0]]), tf.constant([[1, 0, 0]])).numpy() == pytest.approx(
        0.239545, abs=1e-6
    )
    # grades [2, 1, 0] -> gains [3, 1, 0] -> targets [3/4, 1/4, 0]; equal logits: log softmax = −log 3
    assert losses.listwise_softmax(tf.zeros((1, 3)), tf.constant([[2, 1, 0]])).numpy() == pytest.approx(
        np.log(3), abs=1e-6
    )
    # a group with no relevant document is left out of the mean (it would otherwise be 0/0)
    two = losses.listwise_softmax(tf.constant([[2.0, 0.0, 0.0], [5.0, 1.0, 0.0]]), tf.constant([[1, 0, 0], [0, 0, 0]]))
    assert two.numpy() == pytest.approx(0.239545, abs=1e-6)


def test_listwise_softmax_averages_groups_of_any_grade():
    # group 1: positive graded 3, logits [2, 0, 0] -> ℓ = 0.239545 (above)
    # group 2: positive graded 1, logits [0, 0, 0] -> ℓ = log 3 = 1.098612; mean 0.669079
    s, g = tf.constant([[2.0, 0.0, 0.0], [0.0, 0.0, 0.0]]), tf.constant([[3, 0, 0], [1, 0, 0]])
    assert losses.listwise_softmax(s, g).numpy() == pytest.approx(0.669079, abs=1e-6)


# ------------------------------------------------------------------ config
def test_config_validates_interaction_and_loss():
    with pytest.raises(ConfigError, match="model.interaction"):
        config_from_dict({"model": {"kind": "cross_encoder", "interaction": "heavy"}})
    from deepseek_tf.models import build_model

    model = {"kind": "cross_encoder", "num_layers": 1, "hidden_dim": 8, "num_heads": 2, "intermediate_dim": 16}
    config = config_from_dict({"model": model, "train": {"loss": "triplet"}})
    with pytest.raises(ConfigError, match="cross-encoder takes"):
        build_model(config, 20)


# ------------------------------------------------------------------ training data
def test_mined_negatives_exclude_judged_positives(tiny_beir):
    from deepseek_tf.data import load_beir
    from deepseek_tf.train.rerank_train import build_groups, mine_negatives

    ds = load_beir(tiny_beir, "train")
    pools = mine_negatives(ds, "bm25", top_k=10)
    assert set(pools) == set(ds.qrels)
    for q, pool in pools.items():
        assert not set(pool) & {d for d, g in ds.qrels[q].items() if g >= 1}
    groups = build_groups(ds, pools, num_negatives=3, rounds=2, seed=1)
    positives = sum(1 for docs in ds.qrels.values() for g in docs.values() if g >= 1)
    assert len(groups) == 2 * positives  # two rounds over every (query, positive)
    assert all(len(row) == 4 for row in groups.docs)
    # column 0 keeps the judged grade (2 or 1 in the fixture), never flattened; negatives are 0
    assert sorted({row[0] for row in groups.grades}) == [1, 2]
    assert all(g == 0 for row in groups.grades for g in row[1:])
    assert build_groups(ds, pools, 3, rounds=2, seed=1).docs == groups.docs  # seeded


def test_run_file_first_stage_gives_each_query_its_top_k(tiny_beir, tmp_path):
    from deepseek_tf.data import load_beir, write_run
    from deepseek_tf.train.rerank_train import first_stage_top_k, mine_negatives

    ds = load_beir(tiny_beir, "train")
    qids, docs = sorted(ds.qrels), sorted(ds.corpus)
    # query i's scores: doc j gets (j * 7 + i) % len(docs), so each query has its own order
    run = {q: {d: float((j * 7 + i) % len(docs)) for j, d in enumerate(docs)} for i, q in enumerate(qids)}
    write_run(run, tmp_path / "r.trec")
    first = first_stage_top_k(ds, f"run:{tmp_path / 'r.trec'}", top_k=3)
    for q in qids:
        want = sorted(run[q], key=lambda d: -run[q][d])[:3]
        assert list(first[q]) == want and [first[q][d] for d in want] == [run[q][d] for d in want]
    pools = mine_negatives(ds, "unused", first=first)
    assert all(not set(pools[q]) & {d for d, g in ds.qrels[q].items() if g >= 1} for q in qids)
    del run[qids[0]]
    write_run(run, tmp_path / "short.trec")
    with pytest.raises(UserError, match=f"short.trec: 1 of the {len(qids)} judged queries are not in the run"):
        first_stage_top_k(ds, f"run:{tmp_path / 'short.trec'}", top_k=3)
    run[qids[0]] = {"no-such-doc": 1.0}
    write_run(run, tmp_path / "unknown.trec")
    with pytest.raises(UserError, match="unknown.trec: 1 documents not in the corpus"):
        first_stage_top_k(ds, f"run:{tmp_path / 'unknown.trec'}", top_k=3)


def test_run_file_source_is_checked_before_anything_is_written(tiny_beir, tmp_path):
    from deepseek_tf.train import train
    from deepseek_tf.train.rerank_train import train_cross_encoder

    (tmp_path / "r.trec").write_text("1 Q0 d1 1 1.0 t\n")
    for overrides, message in [([f"data.negatives_from=run:{tmp_path / 'none.trec'}"], "missing run file")]:
        config = load_config(TINY, [f"data.dataset={tiny_beir}", *overrides])
        with pytest.raises(ConfigError, match=message):
            train_cross_encoder(config, tmp_path / "run", verbose=0)
        assert not (tmp_path / "run").exists()
    dual = load_config(
        ROOT / "configs" / "tiny.yaml",
        [f"data.dataset={tiny_beir}", "data.mine_negatives=true", f"data.negatives_from=run:{tmp_path / 'r.trec'}"],
    )
    with pytest.raises(ConfigError, match="a run file serves cross-encoder training"):
        train(dual, tmp_path / "dual", verbose=0)
    assert not (tmp_path / "dual").exists()


def test_judged_negatives_join_every_group_once():
    from deepseek_tf.data import BeirDataset
    from deepseek_tf.train.rerank_train import build_groups

    corpus = {d: {"title": "", "text": d} for d in ["p2", "p1", "j", "n1", "n2", "n3", "n4", "n5"]}
    ds = BeirDataset(corpus, {"q": "query"}, {"q": {"p2": 2, "p1": 1, "j": 0}})
    pool = ["j", "n1", "n2", "n3", "n4", "n5"]  # the judged "no" is also in the first stage's pool
    groups = build_groups(ds, {"q": pool}, num_negatives=3, seed=0, rounds=10, judged_negatives=1)
    # every group: its positive, the judged negative "j" once (never drawn again from the pool),
    # and two mined negatives; grades stay [g, 0, 0, 0]
    assert len(groups) == 20
    for docs, grades in zip(groups.docs, groups.grades):
        assert docs[1] == "j" and docs.count("j") == 1 and len(set(docs)) == 4
        assert grades[1:] == [0, 0, 0] and grades[0] in (1, 2)
    # off (the default), "j" only comes when the pool draw finds it: about half the groups (3 draws of 6)
    plain = build_groups(ds, {"q": pool}, num_negatives=3, seed=0, rounds=10)
    assert 0 < sum("j" in docs for docs in plain.docs) < 20
    with pytest.raises(ConfigError, match="judged_negatives"):
        build_groups(ds, {"q": pool}, num_negatives=2, judged_negatives=3)


def test_dev_queries_are_held_out_and_reranked_after_each_epoch(tiny_beir, tmp_path, capfd):
    from deepseek_tf.data import load_beir
    from deepseek_tf.data.splits import split_dev
    from deepseek_tf.evaluate.metrics import trec_metrics
    from deepseek_tf.retrieval.rerank import Reranker, rerank_run
    from deepseek_tf.train import train
    from deepseek_tf.train.rerank_train import first_stage_top_k

    overrides = ["data.dev_fraction=0.5", "train.epochs=4", "train.steps_per_epoch=2", "train.learning_rate=1.0e-2"]
    config = load_config(TINY, [f"data.dataset={tiny_beir}", *overrides])
    history = train(config, tmp_path, verbose=0)
    err = capfd.readouterr().err
    # 6 of the 12 train queries held out: 6 × 4 judged groups are left to train on
    assert "dev: 6 queries" in err and "24 groups per epoch" in err
    assert len(history["dev_ndcg@10"]) == len(history["dev_fused_ndcg@10"]) == 4
    # measured: 0.9408, 0.9460, 0.8968, 0.9062: the best epoch (2) is not the last
    best = history["best"][0]
    assert best["dev_ndcg@10"] == max(history["dev_ndcg@10"]) > history["dev_ndcg@10"][-1] and best["epoch"] < 4
    # model/ holds the best epoch: reranking the dev queries' BM25 top-10 with it gives that figure
    _, dev = split_dev(load_beir(tiny_beir, "train"), 0.5, seed=42)
    run, _ = rerank_run(Reranker.load(str(tmp_path / "model")), dev, first_stage_top_k(dev, "bm25", 10), 10)
    assert trec_metrics(dev.qrels, run)[0]["ndcg@10"] == pytest.approx(best["dev_ndcg@10"], abs=1e-6)
    # a dev split that shares queries with the training split is refused before anything is written
    config = load_config(TINY, [f"data.dataset={tiny_beir}", "data.dev_split=train"])
    with pytest.raises(UserError, match="data.dev_split train: 12 of its queries are also in data.train_split"):
        train(config, tmp_path / "overlap", verbose=0)
    assert not (tmp_path / "overlap").exists()


def test_group_batch_is_query_document_pairs():
    from deepseek_tf.text.tokenizer import Tokenizer
    from deepseek_tf.train.rerank_train import tokenize_groups

    tok = Tokenizer(VOCAB)
    fn = tokenize_groups(tok, "full", 16, 32)
    x, y = fn(
        {"query": tf.constant(["summer dress"]), "docs": tf.constant([["light cotton dress", "tent"]])},
        tf.constant([[2, 0]]),
    )
    assert y.shape == (1, 2)
    ids = x["token_ids"].numpy()
    v = {t: i for i, t in enumerate(VOCAB)}
    # row 0: [CLS] summer dress [SEP] light cotton dress [SEP]; row 1 pairs the same query with "tent"
    words = "[CLS] summer dress [SEP] light cotton dress [SEP]".split()
    assert ids[0].tolist() == [v[w] for w in words]
    assert x["segment_ids"].numpy()[0].tolist() == [0, 0, 0, 0, 1, 1, 1, 1]
    assert ids[1, :5].tolist() == [v["[CLS]"], v["summer"], v["dress"], v["[SEP]"], v["tent"]]
    light, _ = tokenize_groups(tok, "light", 16, 32)(
        {"query": tf.constant(["summer dress"]), "docs": tf.constant([["light cotton dress", "tent"]])},
        tf.constant([[2, 0]]),
    )
    assert light["query"]["token_ids"].shape[0] == 2 and light["doc"]["token_ids"].shape[0] == 2


# ------------------------------------------------------------------ models
def _tiny_model(interaction: str, loss: str = "listwise", head: str = "dense"):
    import keras

    from deepseek_tf.models import build_model

    # The "near chance at start" checks depend on the initial weights, so they must not depend
    # on which tests ran before in this process (pytest -n 2 orders them differently).
    keras.utils.set_random_seed(0)
    config = load_config(TINY, [f"model.interaction={interaction}", f"train.loss={loss}", f"model.score_head={head}"])
    keras_model = build_model(config, len(VOCAB))
    from deepseek_tf.text.tokenizer import Tokenizer

    return keras_model, Tokenizer(VOCAB), config


@pytest.mark.parametrize(
    "interaction,head", [("full", "dense"), ("full", "cosine"), ("light", "dense"), ("light", "cosine")]
)
def test_save_reload_gives_same_scores(interaction, head, tmp_path):
    import keras

    from deepseek_tf.retrieval.rerank import Reranker

    model, tok, config = _tiny_model(interaction, head=head)
    queries = ["summer dress", "camping tent", "coffee"]
    docs = ["light cotton dress", "the best tent for camping", "espresso coffee"]
    before = Reranker.from_keras(model, tok, config).score_pairs(queries, docs)
    path = tmp_path / "m.keras"
    model.save(path)
    loaded = keras.models.load_model(path, compile=False)
    assert type(loaded) is type(model) and loaded.get_config() == model.get_config()
    after = Reranker.from_keras(loaded, tok, config).score_pairs(queries, docs)
    np.testing.assert_allclose(after, before, atol=1e-6)
    assert len(set(np.round(before, 6))) == 3  # really depends on the pair


@pytest.mark.parametrize("interaction,head", [("full", "dense"), ("full", "cosine"), ("light", "cosine")])
def test_widened_batches_score_the_same(interaction, head):
    """Padding to a multiple of 64 for XLA (Tokenizer.widen) is masked everywhere, heads included."""
    from deepseek_tf.train.rerank_train import tokenize_groups

    model, tok, config = _tiny_model(interaction, head=head)
    batch = {
        "query": tf.constant(["summer dress", "coffee"]),
        "docs": tf.constant([["light cotton dress", "tent"], ["espresso coffee", "dress"]]),
    }
    grades = tf.constant([[2, 0], [1, 0]])
    x, _ = tokenize_groups(tok, interaction, 16, 32)(batch, grades)
    wide, _ = tokenize_groups(tok, interaction, 16, 32, pad_multiple=64)(batch, grades)
    widths = lambda inputs: [t["token_ids"].shape[1] for t in ((inputs,) if interaction == "full" else inputs.values())]
    assert set(widths(wide)) <= {16, 32} and widths(wide) != widths(x)
    np.testing.assert_allclose(model(wide).numpy(), model(x).numpy(), atol=1e-5)


def test_cosine_head_starts_as_segment_cosine():
    # zero-initialised Dense: score = cos(mean of [CLS] q [SEP] states, mean of d [SEP] states) / τ
    from deepseek_tf.train.rerank_train import tokenize_groups

    model, tok, config = _tiny_model("full", head="cosine")
    x, _ = tokenize_groups(tok, "full", 16, 32)(
        {"query": tf.constant(["summer dress"]), "docs": tf.constant([["light cotton dress", "tent"]])},
        tf.constant([[1, 0]]),
    )
    seq = model.backbone(x, training=False)["sequence_output"].numpy()  # (2, len, hidden)
    mask, seg = x["padding_mask"].numpy(), x["segment_ids"].numpy()
    want = []
    for i in range(2):
        q = seq[i][mask[i] & (seg[i] == 0)].mean(0)
        d = seq[i][mask[i] & (seg[i] == 1)].mean(0)
        want.append(q @ d / np.linalg.norm(q) / np.linalg.norm(d) / config.train.temperature)
    np.testing.assert_allclose(model(x, training=False).numpy(), want, rtol=1e-5, atol=1e-5)


def test_light_cosine_reranker_from_a_trained_dual_encoder_starts_at_its_ranking(tiny_run):
    # model.backbone = the dual encoder's model/ dir: its tower's weights, its vocab; with the
    # zero-initialised head the light cross-encoder's score is exactly q·d / τ of the retriever.
    from deepseek_tf.models import build_model
    from deepseek_tf.retrieval.artifacts import load_embedder
    from deepseek_tf.retrieval.rerank import Reranker
    from deepseek_tf.train.artifacts import prepare_tokenizer

    run = tiny_run / "model"
    config = load_config(
        TINY, [f"model.backbone={run}", "model.interaction=light", "model.score_head=cosine", "model.trainable=false"]
    )
    retriever = load_embedder(str(run))  # configs/tiny.yaml: same lengths (16, 64) as the reranker's
    tok = prepare_tokenizer(config, None, run)  # reads run/vocab.txt
    model = build_model(config, tok.vocab_size)
    queries = ["summer dress", "camping tent", "light laptop"]
    docs = ["a light cotton summer dress", "tent for camping", "espresso coffee"]
    want = np.sum(retriever.encode_queries(queries) * retriever.encode_docs(docs), axis=1) / config.train.temperature
    got = Reranker.from_keras(model, tok, config).score_pairs(queries, docs)
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)
    assert model.backbone.trainable is False


def test_training_fits_a_fixed_batch():
    import keras

    from deepseek_tf.train.rerank_train import tokenize_groups

    model, tok, config = _tiny_model("full")
    batch = {
        "query": tf.constant(["summer dress", "camping tent"]),
        "docs": tf.constant([["light cotton dress", "tent", "coffee"], ["camping tent", "dress", "shoes"]]),
    }
    x, y = tokenize_groups(tok, "full", 16, 32)(batch, tf.constant([[2, 0, 0], [1, 0, 0]]))
    model.compile(optimizer=keras.optimizers.Adam(3e-3))
    first = model.train_on_batch(x, y)
    for _ in range(25):
        last = model.train_on_batch(x, y)
    assert first == pytest.approx(np.log(3), abs=0.3)  # near chance at start: −log(1/3)
    assert last < 0.5 * first
    scores = model(x, training=False).numpy().reshape(2, 3)
    assert (scores[:, 0] > scores[:, 1:].max(axis=1)).all()  # each positive now ranks first


# ------------------------------------------------------------------ training options
def test_mixed_precision_training_saves_a_float32_reranker(tiny_beir, tmp_path):
    """train.mixed_precision applies to cross-encoders too (it was silently ignored)."""
    import keras

    from deepseek_tf.train import train

    base = [f"data.dataset={tiny_beir}", "train.epochs=1", "train.steps_per_epoch=2"]
    history = train(load_config(TINY, base + ["train.mixed_precision=mixed_bfloat16"]), tmp_path, verbose=0)
    assert history["steps"] == [2] and np.all(np.isfinite(history["loss"]))
    # same seed in float32: a different loss shows the bf16 run computed in bfloat16
    full = train(load_config(TINY, base), tmp_path / "fp32", verbose=0)
    assert full["loss"][0] != history["loss"][0] and full["loss"][0] == pytest.approx(history["loss"][0], rel=0.05)
    assert keras.config.dtype_policy().name == "float32"  # the global policy is restored
    model = keras.models.load_model(tmp_path / "model" / "model.keras", compile=False)
    policies = {layer.dtype_policy.name for layer in model._flatten_layers()}
    assert policies == {"float32"}


def test_mixed_precision_reaches_a_trained_model_backbone(tiny_run):
    # A dual encoder's model/ dir loads in the float32 it was saved in; under mixed_bfloat16 the
    # reranker's backbone must compute in bfloat16 too (it used to stay float32: 1.75x slower
    # MiniLM steps), holding the same float32 weights.
    from deepseek_tf.models.loading import load_trained
    from deepseek_tf.train.compute import build_in_policy

    run = tiny_run / "model"
    config = load_config(TINY, [f"model.backbone={run}"])
    tower = load_trained(run)[0].query_encoder.backbone
    for policy, compute in (("mixed_bfloat16", "bfloat16"), (None, "float32")):
        backbone = build_in_policy(config, tower.vocabulary_size, policy).backbone
        assert {layer.compute_dtype for layer in backbone.transformer_layers} == {compute}
        assert all(np.array_equal(a, b) for a, b in zip(backbone.get_weights(), tower.get_weights(), strict=True))


def test_model_dropout_reaches_a_pretrained_reranker_backbone(tiny_run, tiny_beir, tmp_path, monkeypatch):
    # model.dropout was ignored for cross-encoders on a pretrained backbone: they trained with the
    # rates saved in the backbone, 0.1 here (the dual-encoder path already applied it).
    import keras

    from deepseek_tf.train import train
    from deepseek_tf.train.compute import dropout_layers

    seen, fit = [], keras.Model.fit

    def spy(self, *args, **kwargs):
        seen.append({layer.rate for layer in dropout_layers(self)})
        return fit(self, *args, **kwargs)

    monkeypatch.setattr(keras.Model, "fit", spy)
    base = [
        f"data.dataset={tiny_beir}",
        f"model.backbone={tiny_run / 'model'}",
        "train.epochs=1",
        "train.steps_per_epoch=1",
    ]
    train(load_config(TINY, base + ["model.dropout=0.25"]), tmp_path, verbose=0)
    assert seen == [{0.25}]
