"""TFLite export round trips on the tiny trained model (SavedModel parity is in test_end_to_end).

Every mode is exported once per session from one temporary SavedModel, then run through
`TFLiteEmbedder` on raw strings (Chinese included) and compared with the Keras model.
"""

import hashlib
import json
import shutil

import numpy as np
import pytest
from conftest import run_cli

from deepseek_tf.errors import UserError
from deepseek_tf.export.saved_model import HELD_TEXTS
from deepseek_tf.export.tflite import TOLERANCES, calibration_texts, compare
from deepseek_tf.export.towers import PreparedExport
from deepseek_tf.retrieval.artifacts import load_embedder
from deepseek_tf.retrieval.tflite import TFLiteEmbedder, tower_paths

# Not among the held texts the export checked itself on.
FRESH = [
    "防水帐篷 两人",
    "espresso machine with burr grinder",
    "x",
    "Cranfield: 1400 abstracts; 225 queries.",
    "running shoes " * 30,
]
# The tiny model (2 layers, hidden 32, a few training steps) has a narrow activation range per
# layer that 8-bit activations resolve coarsely; MiniLM figures are in README "Export".
TINY_INT8_MIN_COSINE = 0.7


@pytest.fixture(scope="module")
def exported(tiny_run, tiny_beir, tmp_path_factory):
    """{mode: PREFIX.query.tflite} for none / float16 / dynamic / int8, the reference, the exporter."""
    out = tmp_path_factory.mktemp("tflite")
    prepared = PreparedExport(tiny_run / "model")  # one temporary SavedModel for every mode
    paths = {}
    try:
        for mode in ("none", "float16", "dynamic", "int8"):
            calibration = calibration_texts(tiny_beir) if mode == "int8" else None
            tolerance = TINY_INT8_MIN_COSINE if mode == "int8" else None
            prepared.write(out / mode, mode, calibration, tolerance)
            paths[mode] = tower_paths(out / mode)["query"]
        yield {"paths": paths, "reference": prepared.reference, "prepared": prepared}
    finally:
        prepared.close()


@pytest.mark.parametrize("mode", ["none", "float16", "dynamic", "int8"])
def test_tflite_matches_keras_on_raw_strings(exported, mode):
    emb = TFLiteEmbedder(exported["paths"][mode])
    texts = HELD_TEXTS + FRESH
    for tower in ("query", "doc"):
        want = exported["reference"].encode(texts, tower)
        got = emb.encode(texts, tower, batch_size=4)  # (13, 32) in batches of 4, 4, 4, 1
        assert got.shape == (len(texts), 32) and np.all(np.isfinite(got))
        figures = compare(want, got)
        if mode == "none":
            assert figures["max_abs_diff"] <= 1e-4, figures
        elif mode == "int8":
            assert figures["min_cosine"] >= TINY_INT8_MIN_COSINE, figures
        else:
            assert figures["min_cosine"] >= TOLERANCES[mode][1], figures
        # dynamic batch: a text alone gives the row it got inside a batch
        k = texts.index("防水帐篷 两人")
        np.testing.assert_allclose(emb.encode([texts[k]], tower)[0], got[k], atol=1e-5)


def test_tflite_attention_has_no_float_select(exported):
    # A broadcast SELECT_V2 over attention scores runs on TFLite's slow reference kernel; the
    # export adds the mask instead. (The tokenizer's integer SELECTs place [SEP]: cheap.)
    interpreter = TFLiteEmbedder(exported["paths"]["dynamic"]).runners["doc"].interpreter
    tensors = {t["index"]: t for t in interpreter.get_tensor_details()}
    ops = interpreter._get_ops_details()
    selects = [op for op in ops if op["op_name"] in ("SELECT", "SELECT_V2")]
    assert any(op["op_name"] == "BATCH_MATMUL" for op in ops)
    assert [
        tensors[op["outputs"][0]]["dtype"] for op in selects if tensors[op["outputs"][0]]["dtype"] != np.int32
    ] == []


def _spy_interpreter_threads(monkeypatch) -> list:
    """Records the num_threads each TFLite interpreter is built with."""
    from tensorflow.lite.python import interpreter as tfl

    seen, real = [], tfl.InterpreterWithCustomOps.__init__

    def spy(self, *args, **kwargs):
        seen.append(kwargs.get("num_threads"))
        real(self, *args, **kwargs)

    monkeypatch.setattr(tfl.InterpreterWithCustomOps, "__init__", spy)
    return seen


def test_tflite_uses_the_allowed_cpus_by_default(exported, monkeypatch):
    # TFLite's own default is one thread; ours is the process's CPU affinity (3 CPUs faked here).
    import os

    texts = HELD_TEXTS + FRESH
    two = TFLiteEmbedder(exported["paths"]["none"], num_threads=2).encode(texts, "doc")
    seen = _spy_interpreter_threads(monkeypatch)
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1, 2}, raising=False)
    one = TFLiteEmbedder(exported["paths"]["none"], num_threads=1)
    default = TFLiteEmbedder(exported["paths"]["none"])
    assert seen == [1, 1, 3, 3]  # one interpreter per tower file
    # threads split the work, not the sums: the same vectors
    np.testing.assert_allclose(one.encode(texts, "doc"), two, atol=1e-6)
    np.testing.assert_allclose(default.encode(texts, "doc"), two, atol=1e-6)
    with pytest.raises(UserError, match="threads must be >= 1, got 0"):
        TFLiteEmbedder(exported["paths"]["none"], num_threads=0)


def test_each_tower_keeps_its_max_length(exported):
    # Shared towers: same weights, but the query file truncates at 16 tokens and the doc file at 64.
    emb = TFLiteEmbedder(exported["paths"]["none"])
    short, long = "summer dress", "running shoes " * 30  # 2 and 60 word pieces
    np.testing.assert_allclose(emb.encode([short], "query"), emb.encode([short], "doc"), atol=1e-6)
    assert np.max(np.abs(emb.encode([long], "query") - emb.encode([long], "doc"))) > 1e-3


def test_metadata_beside_each_file(exported, tiny_run):
    query = exported["paths"]["dynamic"]
    vocab = (tiny_run / "model" / "vocab.txt").read_text(encoding="utf-8").splitlines()
    for tower, max_length in (("query", 16), ("doc", 64)):
        path = query.with_name(query.name.replace(".query.", f".{tower}."))
        meta = json.loads(path.with_suffix(".json").read_text())
        assert meta["tower"] == tower and meta["max_length"] == max_length
        assert meta["quantization"] == "dynamic" and meta["embedding_dim"] == 32
        assert meta["vocab_sha256"] == hashlib.sha256("\n".join(vocab).encode()).hexdigest()
        assert meta["tower_files"] == {"query": query.name, "doc": query.name.replace(".query.", ".doc.")}
        assert meta["checks_passed"] and meta["checks"][tower]["min_cosine"] >= 0.98
        assert meta["size_bytes"] == path.stat().st_size
        assert meta["model_config"]["hidden_dim"] == 32


def test_quantized_files_are_smaller(exported):
    size = {m: p.stat().st_size for m, p in exported["paths"].items()}
    assert size["float16"] < size["none"] and size["dynamic"] < size["float16"] and size["int8"] < size["none"]


def test_a_lone_file_serves_both_towers(exported, tmp_path):
    lone = tmp_path / "lone.tflite"
    shutil.copy(exported["paths"]["none"], lone)  # no metadata beside it
    emb = TFLiteEmbedder(lone)
    text = ["running shoes " * 30]
    np.testing.assert_allclose(emb.encode(text, "doc"), emb.encode(text, "query"), atol=0)


def test_evaluate_runs_on_the_tflite_file(exported, tiny_run, tiny_beir):
    from deepseek_tf.evaluate.report import evaluate

    assert isinstance(load_embedder(str(exported["paths"]["none"])), TFLiteEmbedder)
    got = evaluate(str(exported["paths"]["none"]), str(tiny_beir))["dense"]
    want = evaluate(str(tiny_run / "model"), str(tiny_beir))["dense"]
    assert got["queries"] == want["queries"] == 6
    assert got["ndcg@10"] == pytest.approx(want["ndcg@10"], abs=1e-6)  # float32 file: same ranking


def test_failed_check_writes_nothing(exported, tmp_path, monkeypatch):
    reference = exported["reference"]
    encode = reference.encode
    # A reference off by 0.01 everywhere: the float32 file differs from it by 0.01 > 1e-4.
    monkeypatch.setattr(reference, "encode", lambda texts, tower, **kw: encode(texts, tower, **kw) + 0.01)
    with pytest.raises(
        UserError,
        match=r"export check failed: query tower \(none\) max_abs_diff 0.01, "
        r"needs <= 0.0001; nothing written",
    ):
        exported["prepared"].write(tmp_path / "out" / "m", "none")
    assert not (tmp_path / "out").exists()


def test_cli_int8_without_dataset_is_one_line(tiny_run, tmp_path):
    proc = run_cli(
        "deepseek_tf.export",
        "--model",
        str(tiny_run / "model"),
        "--format",
        "tflite",
        "--quantize",
        "int8",
        "--output",
        str(tmp_path / "m"),
    )
    assert proc.returncode == 1
    lines = [l for l in proc.stderr.splitlines() if l.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: --quantize int8 needs --dataset DIR"), proc.stderr
    assert not any(tmp_path.iterdir())


@pytest.fixture(scope="module")
def cross_model_dir(tiny_run, tmp_path_factory):
    """An untrained tiny cross-encoder saved as a model/ dir (conversion needs no training)."""
    import tensorflow as tf
    from conftest import ROOT

    from deepseek_tf.config import load_config, save_config
    from deepseek_tf.models import build_model
    from deepseek_tf.text.tokenizer import Tokenizer

    directory = tmp_path_factory.mktemp("cross") / "model"
    directory.mkdir()
    shutil.copy(tiny_run / "model" / "vocab.txt", directory / "vocab.txt")
    config = load_config(ROOT / "configs" / "cross_encoder_tiny.yaml")
    tokenizer = Tokenizer.from_file(directory / "vocab.txt", config.model.lowercase)
    model = build_model(config, tokenizer.vocab_size)
    model(tokenizer.pairs(tf.constant(["summer dress"]), tf.constant(["light summer dress"]), 64))
    model.save(directory / "model.keras")
    save_config(config, directory / "config.yaml")
    return directory


def test_report_on_a_cross_encoder_is_one_line(cross_model_dir, tiny_beir, tmp_path):
    proc = run_cli(
        "deepseek_tf.export",
        "--model",
        str(cross_model_dir),
        "--format",
        "tflite",
        "--report",
        "--dataset",
        str(tiny_beir),
        "--output",
        str(tmp_path / "ce"),
    )
    assert proc.returncode == 1
    lines = [l for l in proc.stderr.splitlines() if l.strip()]
    assert len(lines) == 1 and lines[0].startswith(
        f"error: --report measures dual-encoder towers and {cross_model_dir} is a cross_encoder"
    ), proc.stderr
    assert "evaluate --rerank FILE.tflite" in lines[0] and not any(tmp_path.iterdir())


def test_cross_encoder_tflite_matches_keras(cross_model_dir, tmp_path, monkeypatch):
    import os

    from deepseek_tf.export.towers import export_tflite
    from deepseek_tf.retrieval.rerank import Reranker

    result = export_tflite(cross_model_dir, tmp_path / "ce", "none")
    path = tmp_path / "ce.tflite"
    assert result["paths"] == {"score": str(path)} and result["checks"]["score"]["pairs"] == len(HELD_TEXTS) ** 2
    meta = json.loads((tmp_path / "ce.json").read_text())
    assert meta["kind"] == "cross_encoder" and meta["pair_max_length"] == 64 and meta["checks_passed"]
    queries = ["防水帐篷", "summer dress", "", "espresso machine"]
    docs = ["两人 camping tent waterproof", "running shoes " * 40, "轻便笔记本", ""]
    want = Reranker.load(str(cross_model_dir)).score_pairs(queries, docs)
    seen = _spy_interpreter_threads(monkeypatch)
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1}, raising=False)
    got = Reranker.load(str(path)).score_pairs(queries, docs)  # the .tflite works as --rerank MODEL
    assert got.shape == (4,) and np.max(np.abs(got - want)) <= 1e-4
    assert seen == [2]  # --rerank FILE.tflite scores on every allowed CPU
