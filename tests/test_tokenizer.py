import numpy as np
import tensorflow as tf

from deepseek_tf.text.tokenizer import Tokenizer, build_vocab

VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "a", "b", "c", "##b", "hello", "world", "!", "手", "机"]
#         0        1        2        3        4        5    6    7    8      9        10       11   12   13


def test_single_texts_hand_checked():
    out = Tokenizer(VOCAB)(tf.constant(["Hello world!", "ab c", ""]), max_length=5)
    # "hello world !" -> 9 10 11; "ab c" -> a ##b c = 5 8 7; "" -> nothing
    np.testing.assert_array_equal(out["token_ids"], [[2, 9, 10, 11, 3], [2, 5, 8, 7, 3], [2, 3, 0, 0, 0]])
    np.testing.assert_array_equal(out["padding_mask"], [[1, 1, 1, 1, 1], [1, 1, 1, 1, 1], [1, 1, 0, 0, 0]])
    np.testing.assert_array_equal(out["segment_ids"], np.zeros((3, 5)))


def test_pads_to_batch_longest_and_truncates():
    tok = Tokenizer(VOCAB)
    short = tok(tf.constant(["a", "a b"]), max_length=64)
    assert short["token_ids"].shape == (2, 4)  # [CLS] a b [SEP], not 64
    long = tok(tf.constant(["a b c a b c a b c"]), max_length=5)
    np.testing.assert_array_equal(long["token_ids"], [[2, 5, 6, 7, 3]])  # cut, [SEP] kept last


def test_cjk_one_token_per_character_and_unknown():
    out = Tokenizer(VOCAB)(tf.constant(["手机 zzz"]), max_length=10)
    np.testing.assert_array_equal(out["token_ids"], [[2, 12, 13, 1, 3]])


def test_pairs_segments_hand_checked():
    out = Tokenizer(VOCAB).pairs(tf.constant(["hello", "a"]), tf.constant(["world ! a b", "c"]), max_length=8)
    np.testing.assert_array_equal(out["token_ids"], [[2, 9, 3, 10, 11, 5, 6, 3], [2, 5, 3, 7, 3, 0, 0, 0]])
    np.testing.assert_array_equal(out["segment_ids"], [[0, 0, 0, 1, 1, 1, 1, 1], [0, 0, 0, 1, 1, 0, 0, 0]])
    np.testing.assert_array_equal(out["padding_mask"].numpy().sum(1), [8, 5])


def test_build_vocab_from_mixed_chinese_english():
    vocab = build_vocab(["轻便笔记本 laptop", "summer dress 连衣裙"] * 5, vocab_size=200)
    assert vocab[:5] == ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    tok = Tokenizer(vocab)
    ids = tok(tf.constant(["轻便笔记本"]), 16)["token_ids"].numpy()[0]
    pieces = [vocab[i] for i in ids]
    assert pieces == ["[CLS]", "轻", "便", "笔", "记", "本", "[SEP]"]


def test_widen_pads_to_the_next_multiple_within_max_length():
    tok = Tokenizer(VOCAB)
    # "a b" -> [CLS] a b [SEP] = 4 wide; multiple 3 -> 6, masked and [PAD] (0) beyond the text
    out = tok(tf.constant(["a b", "c"]), max_length=64, multiple=3)
    np.testing.assert_array_equal(out["token_ids"], [[2, 5, 6, 3, 0, 0], [2, 7, 3, 0, 0, 0]])
    np.testing.assert_array_equal(out["padding_mask"], [[1, 1, 1, 1, 0, 0], [1, 1, 1, 0, 0, 0]])
    np.testing.assert_array_equal(out["segment_ids"], np.zeros((2, 6)))
    # the next multiple (64) is past max_length 5: capped there, never cut below the text
    assert tok(tf.constant(["a b c"]), max_length=5, multiple=64)["token_ids"].shape == (1, 5)
    assert tok(tf.constant(["a b c"]), max_length=64, multiple=5)["token_ids"].shape == (1, 5)  # already a multiple
    # pairs: the hand-checked 8-wide pair batch above, widened to 12 with max_length 12
    pairs = tok.pairs(tf.constant(["hello", "a"]), tf.constant(["world ! a b", "c"]), max_length=12, multiple=6)
    np.testing.assert_array_equal(
        pairs["token_ids"], [[2, 9, 3, 10, 11, 5, 6, 3, 0, 0, 0, 0], [2, 5, 3, 7, 3, 0, 0, 0, 0, 0, 0, 0]]
    )
    np.testing.assert_array_equal(pairs["segment_ids"][:, 6:], [[1, 1, 0, 0, 0, 0], [0, 0, 0, 0, 0, 0]])
    np.testing.assert_array_equal(pairs["padding_mask"].numpy().sum(1), [8, 5])
