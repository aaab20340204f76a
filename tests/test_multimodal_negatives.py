"""Hard negatives and distillation for text + image document towers: mined negatives carry their
own documents' image vectors into the model, the fused tower encodes them, mining with a fused
model encodes the corpus with its images, and text-only negatives are what they were."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf
from conftest import MULTIMODAL_CONFIG as CONFIG
from conftest import MULTIMODAL_TINY as TINY  # products_multimodal.yaml: 8-d images, 4 pairs a batch, 1 step
from conftest import ROOT, image_file_settings

from deepseek_tf.bench.catalogue import catalogue, write_beir
from deepseek_tf.config import load_config
from deepseek_tf.data import doc_images, load_beir
from deepseek_tf.models.dual_encoder import DualEncoder

MINED = [
    "data.mine_negatives=true",
    "data.hard_negatives=2",
    "data.mine_top_k=12",
    "data.mine_skip_top=0",
    "data.mine_margin=0.0",
]


@pytest.fixture(scope="module")
def shop(tmp_path_factory):
    """36 training pairs, a quarter of the products without an image; every other product is
    named by its type alone, so products of one type and other colours share that text and only
    their images tell them apart."""
    corpus, queries, qrels = catalogue(seed=1, types=3, colours=3, per_combo=4, image_dim=8, missing=0.25)
    for record in corpus[::2]:
        kind = record["text"].split(" made of ")[0].removeprefix("a ")
        record["title"], record["text"] = kind, f"a {kind}"
    return write_beir(tmp_path_factory.mktemp("shop"), corpus, queries, qrels)


def _config(shop, *overrides):
    return load_config(CONFIG, [f"data.dataset={shop}", *TINY, *MINED, *overrides])


def _spy_on_negatives(monkeypatch) -> list[dict]:
    """Every batch that reaches `DualEncoder.call` with hard negatives, as numpy arrays: the query
    and doc ids, the negatives' token ids, padding mask, image and image mask."""
    seen: list[dict] = []
    call = DualEncoder.call
    names = (
        "query",
        "doc",
        "doc_mask",
        "doc_image",
        "doc_image_mask",
        "neg",
        "neg_mask",
        "neg_image",
        "neg_image_mask",
    )

    def record(*arrays):
        seen.append(dict(zip(names, arrays)))
        return np.int64(0)

    def spy(self, inputs, training=None):
        if "neg" in inputs:
            doc, neg = inputs["doc"], inputs["neg"]
            parts = [inputs["query"]["token_ids"], doc["token_ids"], doc["padding_mask"], doc["image"]]
            parts += [doc["image_mask"], neg["token_ids"], neg["padding_mask"], neg["image"], neg["image_mask"]]
            tf.numpy_function(record, parts, tf.int64)  # stateful: runs inside the traced train step
        return call(self, inputs, training=training)

    monkeypatch.setattr(DualEncoder, "call", spy)
    return seen


def _spy_on_tokenizer(monkeypatch) -> dict:
    """The tokenizer the trainer builds (a scratch vocabulary, from the training texts)."""
    from deepseek_tf.train import trainer

    got = {}
    prepare = trainer.prepare_tokenizer

    def keep(*args, **kwargs):
        got["tokenizer"] = prepare(*args, **kwargs)
        return got["tokenizer"]

    monkeypatch.setattr(trainer, "prepare_tokenizer", keep)
    return got


def _documents(shop, config, tokenizer) -> dict[str, tuple]:
    """doc id -> (its token ids without padding, its image vector's bytes, its mask): what a row of
    model inputs holding that document must carry."""
    ds = load_beir(shop, "train")
    doc_ids = list(ds.corpus)
    vectors, mask = doc_images(ds.corpus, doc_ids, 8, warn=False)
    out = {}
    for i, doc_id in enumerate(doc_ids):
        text = ds.doc_text(doc_id, config.data.use_title)
        ids = tokenizer.tower(tf.constant([text]), config.model.doc_max_length, "doc")
        tokens = ids["token_ids"][0].numpy()[ids["padding_mask"][0].numpy().astype(bool)]
        out[doc_id] = (tuple(tokens.tolist()), vectors[i].tobytes(), float(mask[i]))
    return out


def _row(tokens, padding, image, mask) -> tuple:
    return (tuple(tokens[padding.astype(bool)].tolist()), image.astype(np.float32).tobytes(), float(mask))


def _check_negatives(seen: list[dict], docs: dict[str, tuple], mined) -> list[tuple]:
    """Asserts that each row's negatives, in the batches the model saw, are one document each
    (text, image and mask together) and together those mined for that row's pair; `mined` holds
    (positive id, negative ids) per pair. Returns each row's (positive, negatives)."""
    negatives_of: dict[tuple, set] = {}  # a pair is known by its positive's text, image and mask
    for pos, negs in mined:
        negatives_of.setdefault(docs[pos], set()).add(tuple(docs[n] for n in negs))
    rows = []
    for b in seen:
        for i in range(len(b["query"])):
            pos = _row(b["doc"][i], b["doc_mask"][i], b["doc_image"][i], b["doc_image_mask"][i])
            negs = tuple(
                _row(b["neg"][i, j], b["neg_mask"][i, j], b["neg_image"][i, j], b["neg_image_mask"][i, j])
                for j in range(b["neg"].shape[1])
            )
            assert negs in negatives_of.get(pos, set())
            rows.append((pos, negs))
    return rows


@pytest.fixture(scope="module")
def self_mined(shop, tmp_path_factory) -> dict:
    """A fused model trained on SHOP with the negatives it mines itself (data.negatives_from self,
    two a pair) in GradCache micro-batches, watched: {"config", "history", "seen": every batch that
    reached DualEncoder.call with negatives, "tokenizer", "given": the images each mining pass was
    given, "mined": the pairs mined, "model": its model dir}."""
    from deepseek_tf.retrieval import mining
    from deepseek_tf.train import train, trainer

    given, mined = [], []
    workdir = tmp_path_factory.mktemp("self_mined")
    with pytest.MonkeyPatch.context() as monkeypatch:
        score = mining.score_matrix_dense
        spy = lambda *a, **k: given.append(k.get("images")) or score(*a, **k)
        monkeypatch.setattr(mining, "score_matrix_dense", spy)
        keep = trainer.mined_pairs
        monkeypatch.setattr(trainer, "mined_pairs", lambda *a, **k: mined.append(keep(*a, **k)) or mined[-1])
        seen, tok = _spy_on_negatives(monkeypatch), _spy_on_tokenizer(monkeypatch)
        config = _config(shop, "data.negatives_from=self", "train.accumulation_steps=2", "train.steps_per_epoch=2")
        history = train(config, workdir, verbose=0)
    return {
        "config": config,
        "history": history,
        "seen": seen,
        "tokenizer": tok["tokenizer"],
        "given": given,
        "mined": mined,
        "model": workdir / "model",
    }


def test_mined_negatives_reach_the_model_with_their_own_images(self_mined, shop):
    """Mined negatives, two a pair, trained with GradCache micro-batches: every negative in every
    batch the model sees is the text and image (or placeholder mask) of one document, and
    together they are the negatives mined for that row's pair."""
    config, history, seen, mined = (self_mined[k] for k in ("config", "history", "seen", "mined"))
    assert history["steps"] == [config.train.steps_per_epoch] and np.all(np.isfinite(history["loss"]))
    # steps x 2 micro-batches x 2 passes, each micro-batch 2 pairs with 2 negatives: (2, 2, length)
    steps = config.train.steps_per_epoch
    assert len(seen) == 4 * steps and all(
        b["neg"].shape[:2] == (2, 2) and b["neg_image"].shape == (2, 2, 8) for b in seen
    )
    docs = _documents(shop, config, self_mined["tokenizer"])
    assert len(mined) == 1
    rows = _check_negatives(seen, docs, zip(mined[0].doc_ids, mined[0].neg_ids))
    other_image = sum(n[1] != pos[1] for pos, negs in rows for n in negs)
    placeholder = sum(n[2] == 0.0 for _, negs in rows for n in negs)
    same_text = sum(n[0] == pos[0] and n[1] != pos[1] for pos, negs in rows for n in negs)
    # negatives with an image other than the positive's, with the placeholder, and with the
    # positive's very text (another colour: only the image tells them apart) all came through
    assert other_image > 0 and placeholder > 0 and same_text > 0


def _fused_model(fusion: str = "concat", *overrides):
    from deepseek_tf.models import build_model

    return build_model(load_config(CONFIG, [*TINY, f"model.fusion={fusion}", *overrides]), vocab_size=50)


def _ids(rng, *shape) -> dict:
    return {"token_ids": tf.constant(rng.integers(5, 50, shape), tf.int32), "padding_mask": tf.ones(shape, tf.int32)}


def _fused_batch(rng, batch: int, k: int = 2) -> dict:
    """Queries, documents with images, k negatives a pair with theirs; some of each read the placeholder."""
    image = tf.constant(rng.normal(size=(batch, k + 1, 8)), tf.float32)  # (batch, 1 + k, image_dim)
    mask = tf.constant(np.arange(batch * (k + 1)).reshape(batch, k + 1) % 4 != 3, tf.float32)  # (batch, 1 + k)
    doc = _ids(rng, batch, 5) | {"image": image[:, 0], "image_mask": mask[:, 0]}
    neg = _ids(rng, batch, k, 5) | {"image": image[:, 1:], "image_mask": mask[:, 1:]}
    return {"query": _ids(rng, batch, 4), "doc": doc, "neg": neg}


@pytest.mark.parametrize("fusion", ["concat", "gated"])
def test_call_encodes_negatives_through_the_fused_tower(fusion):
    model = _fused_model(fusion)
    x = _fused_batch(np.random.default_rng(0), 3)
    neg = x["neg"]
    image, mask = neg["image"], neg["image_mask"]
    assert 0 < mask.numpy().sum() < 6  # images and placeholders
    out = model(x)
    assert out["neg"].shape == (6, out["query"].shape[1])
    flat = {key: tf.reshape(t, [6, -1]) for key, t in neg.items() if key not in ("image", "image_mask")}
    want = model.encode_doc(flat | {"image": tf.reshape(image, [6, 8]), "image_mask": tf.reshape(mask, [6])})
    np.testing.assert_allclose(out["neg"].numpy(), want.numpy(), atol=1e-6)  # pair-major, like the texts
    assert np.abs(out["neg"].numpy() - model.doc_tower(flat).numpy()).max() > 1e-3  # not the text alone
    # one negative a pair: (batch, length) ids, (batch, image_dim) image, (batch,) mask
    one = {key: t[:, 1] for key, t in neg.items()}
    np.testing.assert_allclose(model({"query": x["query"], "neg": one})["neg"].numpy(), want.numpy()[1::2], atol=1e-6)


def test_grad_cache_with_fused_negatives_equals_the_big_batch():
    """accumulation_steps=2 splits the negatives' images with their pairs: the same SGD step as
    the whole batch at once, the fusion layer's weights included."""
    import keras

    x = _fused_batch(np.random.default_rng(2), 8)
    settings = ("gated", "model.dropout=0.0", "train.temperature=0.5")
    big, small = _fused_model(*settings), _fused_model(*settings)
    big(x), small(x)
    small.set_weights(big.get_weights())
    small.accumulation_steps = 2
    init = [w.copy() for w in big.get_weights()]
    losses = []
    for m in (big, small):
        m.compile(optimizer=keras.optimizers.SGD(learning_rate=1.0))
        losses.append(float(m.train_on_batch(x)))
    assert losses[0] == pytest.approx(losses[1], abs=1e-6)
    for a, b in zip(big.get_weights(), small.get_weights()):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)
    fusion = [w.path for w in big.doc_fusion.weights]
    moved = {w.path for w, a in zip(big.weights, init) if not np.allclose(w.numpy(), a)}
    assert set(fusion) <= moved  # the placeholder and the fusion's projection and gate all learned


def test_text_only_negatives_are_the_doc_tower_to_the_bit():
    from deepseek_tf.models import build_model

    config = load_config(ROOT / "configs" / "tiny.yaml", ["train.mask_duplicates=false"])
    model = build_model(config, 50)
    rng = np.random.default_rng(1)
    query, neg = _ids(rng, 3, 4), _ids(rng, 3, 2, 6)  # neg: (batch, k, length)
    got = model({"query": query, "neg": neg})["neg"].numpy()
    want = model.doc_tower({key: tf.reshape(t, [6, 6]) for key, t in neg.items()}).numpy()
    np.testing.assert_array_equal(got, want)


def test_a_fused_model_mines_with_the_corpus_images(shop):
    """A fused embedder scores documents with their images: other images, other scores; the
    corpus's own are read when the caller has none to give."""
    from deepseek_tf.retrieval.embedders import KerasEmbedder
    from deepseek_tf.retrieval.mining import score_matrix_dense
    from deepseek_tf.text.tokenizer import Tokenizer

    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *"abcdefghijklmnopqrstuvwxyz"]
    model = _fused_model()
    embedder = KerasEmbedder(model, Tokenizer(vocab), 8, 16, "fused")
    ds = load_beir(shop, "train")
    qids, doc_ids = sorted(ds.qrels)[:4], list(ds.corpus)
    images = doc_images(ds.corpus, doc_ids, 8, warn=False)
    read = score_matrix_dense(embedder, ds, qids, doc_ids)
    given = score_matrix_dense(embedder, ds, qids, doc_ids, images=images)
    np.testing.assert_allclose(read, given, atol=1e-6)
    zeroed = score_matrix_dense(embedder, ds, qids, doc_ids, images=(images[0], np.zeros_like(images[1])))
    assert np.abs(read - zeroed).max() > 1e-3


def test_self_mining_encodes_the_corpus_with_its_images(self_mined, shop):
    """data.negatives_from self on a fused model: mining gets every corpus document's image (read
    once, before the workdir); the negatives reach the model with their own images (above)."""
    ds = load_beir(shop, "train")
    want = doc_images(ds.corpus, list(ds.corpus), 8, warn=False)
    given = self_mined["given"]
    assert len(given) == 1 and given[0] is not None
    np.testing.assert_array_equal(given[0][0], want[0])
    np.testing.assert_array_equal(given[0][1], want[1])


def test_negatives_from_a_fused_model_and_a_text_only_teacher(shop, self_mined, tmp_path, monkeypatch):
    """A fused student distils a text-only cross-encoder's margins over negatives that another
    fused model (self_mined's) mined: it reads the corpus's images itself."""
    from deepseek_tf.retrieval import mining
    from deepseek_tf.retrieval.rerank import Reranker
    from deepseek_tf.train import train

    fused_docs = []
    encode = mining.score_matrix_dense

    def spy(embedder, *args, **kwargs):
        fused_docs.append(embedder.image_dim)
        return encode(embedder, *args, **kwargs)

    monkeypatch.setattr(mining, "score_matrix_dense", spy)
    teacher = tmp_path / "teacher"
    teacher.mkdir()
    (teacher / "saved_model.pb").write_bytes(b"a stand-in teacher")

    def by_length(q, d):  # a teacher that prefers longer documents
        return tf.cast(tf.strings.length(d), tf.float32)

    monkeypatch.setattr(Reranker, "load", classmethod(lambda cls, spec: Reranker(by_length, "len")))
    config = _config(
        shop, f"data.negatives_from={self_mined['model']}", f"data.teacher={teacher}", "train.loss=margin_mse"
    )
    history = train(config, tmp_path / "student", verbose=0)
    assert fused_docs == [8] and np.all(np.isfinite(history["loss"])) and history["loss"][-1] > 0
    assert (tmp_path / "student" / "teacher_scores.npz").is_file()


def test_pairs_files_stay_refused(shop, tmp_path):
    from deepseek_tf.errors import ConfigError
    from deepseek_tf.train import train

    pairs = tmp_path / "pairs.tsv"
    pairs.write_text("query\tdoc_content\tneg_doc\nred dress\ta dress\ta shirt\n")
    config = load_config(CONFIG, [f"data.pairs={pairs}", *TINY])
    with pytest.raises(ConfigError, match="pairs files carry no image vectors"):
        train(config, tmp_path / "run", verbose=0)
    assert not (tmp_path / "run").exists()


def test_image_files_are_encoded_once_for_self_mining_and_training(image_file_shop, tmp_path, monkeypatch):
    """With model.image_backbone, mining with the model itself and training read the same image
    vectors: the backbone encodes each corpus file once, before the workdir."""
    from deepseek_tf.data import images as images_lib
    from deepseek_tf.train import train

    data, weights, corpus = image_file_shop
    read = []
    file_inputs = images_lib.image_file_inputs

    def counted(corpus, doc_ids, *args, **kwargs):
        read.append(list(doc_ids))
        return file_inputs(corpus, doc_ids, *args, **kwargs)

    monkeypatch.setattr(images_lib, "image_file_inputs", counted)
    overrides = [f"data.dataset={data}", *TINY, *MINED, *image_file_settings(weights), "data.negatives_from=self"]
    history = train(load_config(CONFIG, overrides), tmp_path / "run", verbose=0)
    assert np.all(np.isfinite(history["loss"]))
    assert read == [[r["_id"] for r in corpus]]  # one pass over the corpus, in its order
