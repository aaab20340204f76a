"""Graded training and per-tower prefixes: label-weighted InfoNCE, judged negatives in mining,
prefixes through tf.data, and the config checks around them."""

import json

import numpy as np
import pytest
import tensorflow as tf

from deepseek_tf.text.tokenizer import Tokenizer

VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "hello", "world", "!", "a", "b", "c", "q", ":"]


def test_weighted_infonce_hand_computed():
    from deepseek_tf.models.losses import infonce

    q = tf.constant([[1.0, 0.0], [0.0, 1.0]])  # (2, 2)
    d = tf.constant([[1.0, 0.0], [0.6, 0.8]])  # (2, 2)
    # logits (τ = 1): row 0 [1, 0.6] own 0 -> log(1 + e^-0.4) = 0.513015
    #                 row 1 [0, 0.8] own 1 -> log(1 + e^-0.8) = 0.371101
    plain = float(infonce(q, d, temperature=1.0))
    weighted = float(infonce(q, d, temperature=1.0, weights=tf.constant([2.0, 1.0])))
    np.testing.assert_allclose(plain, (0.513015 + 0.371101) / 2, atol=1e-5)
    np.testing.assert_allclose(weighted, (2 * 0.513015 + 0.371101) / 3, atol=1e-5)


def test_tower_prefix_equals_tokenizing_the_joined_text():
    tok = Tokenizer(VOCAB).set_prefixes("q : ", None)
    texts = tf.constant(["hello world", ""])
    np.testing.assert_array_equal(
        tok.tower(texts, 8, "query")["token_ids"], tok(tf.constant(["q : hello world", "q : "]), 8)["token_ids"]
    )
    # [CLS] q : hello world [SEP] / [CLS] q : [SEP]
    assert tok.tower(texts, 8, "query")["token_ids"].numpy()[0].tolist() == [2, 10, 11, 4, 5, 3]
    np.testing.assert_array_equal(tok.tower(texts, 8, "doc")["token_ids"], tok(texts, 8)["token_ids"])


def test_pair_dataset_carries_prefixes_and_labels():
    from deepseek_tf.data import Pairs, pair_dataset

    tok = Tokenizer(VOCAB).set_prefixes("q : ", "")
    pairs = Pairs(["hello", "world"], ["a b", "c"], None, [2, 1])
    batch = next(iter(pair_dataset(pairs, tok, 2, 8, 8, shuffle=False, labels=True)))
    assert batch["query"]["token_ids"].numpy().tolist() == [[2, 10, 11, 4, 3], [2, 10, 11, 5, 3]]
    assert batch["doc"]["token_ids"].numpy().tolist() == [[2, 7, 8, 3], [2, 9, 3, 0]]
    assert batch["label"].numpy().tolist() == [2.0, 1.0]


def test_label_weighting_needs_labels():
    from deepseek_tf.data import Pairs, pair_dataset
    from deepseek_tf.errors import UserError

    with pytest.raises(UserError, match="label_weighting"):
        pair_dataset(Pairs(["hello"], ["a"]), Tokenizer(VOCAB), 1, 8, 8, labels=True)


def _beir(tmp_path):
    (tmp_path / "qrels").mkdir()
    docs = {"d1": "alpha beta", "d2": "alpha", "d3": "gamma", "d4": "alpha gamma"}
    (tmp_path / "corpus.jsonl").write_text(
        "".join(json.dumps({"_id": k, "title": "", "text": v}) + "\n" for k, v in docs.items())
    )
    (tmp_path / "queries.jsonl").write_text(json.dumps({"_id": "q1", "text": "alpha beta"}) + "\n")
    (tmp_path / "qrels" / "train.tsv").write_text("query-id\tcorpus-id\tscore\nq1\td1\t2\nq1\td3\t0\n")
    return tmp_path


def test_judged_negatives_come_first(tmp_path):
    from deepseek_tf.data import load_beir
    from deepseek_tf.retrieval.mining import mine_negatives

    ds = load_beir(_beir(tmp_path), "train")
    docs = ["d1", "d2", "d3", "d4"]
    scores = np.array([[0.9, 0.8, 0.1, 0.5]])  # (1 query, 4 docs): d3 (judged 0) scores lowest
    mined = mine_negatives(ds, scores, ["q1"], docs, top_k=4, skip_top=0, margin=0.0, per_pair=2, judged=1)
    ((_, pos, negs),) = mined.pair_ids
    assert pos == "d1" and negs[0] == "d3" and negs[1] in ("d2", "d4")
    assert mined.pairs.labels == [2]
    plain = mine_negatives(ds, scores, ["q1"], docs, top_k=4, skip_top=0, margin=0.0, per_pair=1)
    assert plain.pair_ids[0][2] in ("d2", "d4", "d3")


def test_judged_negatives_config_checks(tmp_path):
    from deepseek_tf.config import load_config
    from deepseek_tf.errors import ConfigError
    from deepseek_tf.train.trainer import check_dual_config

    root = __import__("pathlib").Path(__file__).resolve().parents[1]
    for sets, message in (
        (["data.judged_negatives=1", "data.mine_negatives=false"], "mine_negatives"),
        (["data.judged_negatives=2", "data.hard_negatives=1"], "at most"),
    ):
        config = load_config(root / "configs" / "qbqtc_e5.yaml", sets)
        with pytest.raises(ConfigError, match=message):
            check_dual_config(config)
