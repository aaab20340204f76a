"""train -> model/ -> evaluate -> SavedModel export, on the tiny config (the SPEC's smoke path)."""

import json

import numpy as np
import pytest
import tensorflow as tf
from conftest import ROOT, run_cli, run_cli_here

from deepseek_tf.models.loading import load_trained
from deepseek_tf.retrieval.artifacts import load_embedder


def test_train_writes_the_run_layout(tiny_run):
    for name in (
        "config.yaml",
        "checkpoints",
        "logs",
        "model/model.keras",
        "model/vocab.txt",
        "model/config.yaml",
        "history.json",
    ):
        assert (tiny_run / name).exists(), name
    history = json.loads((tiny_run / "history.json").read_text())
    assert history["steps"] == [6]  # 2 epochs x 3 steps
    assert len(history["loss"]) == 2 and all(np.isfinite(history["loss"]))


def test_saved_model_reload_matches_keras(tiny_run, tiny_saved_model):
    from deepseek_tf.export.saved_model import CHECK_TEXTS

    keras_emb = load_embedder(str(tiny_run / "model"))
    loaded = tf.saved_model.load(str(tiny_saved_model))  # export_saved_model(tiny_run/model), conftest
    texts = CHECK_TEXTS + ["a much longer document about waterproof camping tents " * 5]
    q = loaded.encode_query(tf.constant(texts)).numpy()
    d = loaded.encode_doc(tf.constant(texts)).numpy()
    assert q.shape == (len(texts), 32)
    assert np.max(np.abs(q - keras_emb.encode(texts, "query"))) <= 1e-5
    assert np.max(np.abs(d - keras_emb.encode(texts, "doc"))) <= 1e-5
    # score(query, doc) is the dot product of the two towers' embeddings, row by row
    s = loaded.score(tf.constant(texts[:3]), tf.constant(texts[3:6])).numpy()
    np.testing.assert_allclose(s, np.sum(q[:3] * d[3:6], axis=-1), atol=1e-5)
    meta = json.loads((tiny_saved_model / "deepseek_export.json").read_text())
    assert meta["checks_passed"] and meta["embedding_dim"] == 32


def test_keras_model_save_load_same_outputs(tiny_run):
    model, tokenizer, _ = load_trained(tiny_run / "model")
    import keras

    model.save(tiny_run / "again.keras")
    again = keras.models.load_model(tiny_run / "again.keras", compile=False)
    ids = tokenizer(tf.constant(["summer dress", "轻便笔记本"]), 16)
    np.testing.assert_allclose(model.query_encoder(ids), again.query_encoder(ids), atol=1e-6)


def test_cli_train_evaluate_export(tiny_beir, tmp_path):
    """The three commands in turn, as `python -m` runs them, in this process (TensorFlow loaded
    once). A train command in a fresh process, to a log file, is test_console's."""
    work = tmp_path / "run"
    train = ["--config", str(ROOT / "configs/tiny.yaml"), "--set", f"data.dataset={tiny_beir}"]
    train += ["--set", "train.epochs=1"]
    proc = run_cli_here("deepseek_tf.train", *train, "--workdir", str(work), "--quiet")
    assert proc.returncode == 0, proc.stderr
    evaluate = ["--model", str(work / "model"), "--dataset", str(tiny_beir), "--output", str(tmp_path / "r.json")]
    proc = run_cli_here("deepseek_tf.evaluate", *evaluate)
    assert proc.returncode == 0, proc.stderr
    report = json.loads((tmp_path / "r.json").read_text())
    dense = report["dense"]
    assert dense["queries"] == 6 and 0.0 <= dense["ndcg@10"] <= 1.0
    assert dense["recall@100"] == 1.0  # 24 documents: every relevant one is in the top 100
    export = ["--model", str(work / "model"), "--format", "saved_model", "--output", str(tmp_path / "sm")]
    proc = run_cli_here("deepseek_tf.export", *export)
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "sm" / "saved_model.pb").is_file()


def test_resume_continues_step_count(tiny_beir, tmp_path):
    from deepseek_tf.config import load_config
    from deepseek_tf.train import train

    base = [f"data.dataset={tiny_beir}", "train.steps_per_epoch=2"]
    train(load_config(ROOT / "configs/tiny.yaml", base + ["train.epochs=1"]), tmp_path, verbose=0)
    history = train(load_config(ROOT / "configs/tiny.yaml", base + ["train.epochs=3"]), tmp_path, verbose=0)
    assert history["steps"] == [6]
    assert len(history["loss"]) == 3 and all(np.isfinite(history["loss"]))


@pytest.mark.parametrize(
    "model,dataset,message",
    [
        ("nope", None, "error: --model 'nope': not a trained model dir"),
        ("all-MiniLM-L6-v2", "/nonexistent", "error: dataset directory not found: /nonexistent"),
    ],
)
def test_evaluate_bad_input_one_line(tiny_beir, model, dataset, message):
    proc = run_cli("deepseek_tf.evaluate", "--model", model, "--dataset", dataset or str(tiny_beir))
    assert proc.returncode == 1
    errors = [l for l in proc.stderr.splitlines() if l.strip()]
    assert len(errors) == 1 and errors[0].startswith(message), proc.stderr
