"""Cross-encoder reranking through the commands, on the session's tiny dual encoder and tiny
cross-encoder: evaluate's reranked rows and their saved runs, the fusion sweep, search --rerank,
one query ranked alike by evaluate, search and serve, and the SavedModel's score endpoint (after
rerank_run and fuse by hand)."""

import json
import re

import numpy as np
import pytest
import tensorflow as tf
from conftest import run_cli, run_cli_here

from deepseek_tf.errors import UserError


def test_rerank_run_rescoring_order_and_latency():
    from deepseek_tf.data import BeirDataset
    from deepseek_tf.retrieval.rerank import Reranker, rerank_run

    corpus = {f"d{i}": {"title": "", "text": "x" * (i + 1)} for i in range(5)}
    ds = BeirDataset(corpus, {"q": "query"}, {"q": {"d0": 1}})
    # a stand-in cross-encoder: score = document length
    fake = Reranker(lambda q, d: tf.cast(tf.strings.length(d), tf.float32), "len", batch_size=2)
    first = {"q": {"d0": 0.9, "d1": 0.8, "d2": 0.7, "d3": 0.1, "d4": 0.0}}
    run, stats = rerank_run(fake, ds, first, top_k=3)
    assert run == {"q": {"d0": 1.0, "d1": 2.0, "d2": 3.0}}  # only the first stage's top 3, rescored
    assert stats["rerank_depth"] == 3 and stats["latency_ms_p50"] > 0 and set(stats["latency_ms"]) == {"q"}


def test_fusion_of_standardised_scores():
    from deepseek_tf.retrieval.rerank import fuse

    first, ce = {"q": {"a": 3.0, "b": 1.0}}, {"q": {"a": 0.0, "b": 2.0}}
    # z_first: mean 2, std 1 -> a +1, b −1; z_ce: mean 1, std 1 -> a −1, b +1
    # w = 0.75: a = 0.75·(−1) + 0.25·(+1) = −0.5, b = +0.5; w = 1 is the cross-encoder's order
    assert fuse(first, ce, 0.75) == {"q": {"a": pytest.approx(-0.5), "b": pytest.approx(0.5)}}
    assert fuse(first, ce, 0.0) == {"q": {"a": pytest.approx(1.0), "b": pytest.approx(-1.0)}}


@pytest.fixture(scope="module")
def ce_run(tiny_ce_run):
    history = json.loads((tiny_ce_run / "history.json").read_text())
    assert history["steps"] == [6]
    assert history["train_seconds"][0] > 0  # fit's wall time, as dual-encoder runs record it
    return tiny_ce_run


@pytest.fixture(scope="module")
def evaluated(tiny_run, ce_run, tiny_beir, tmp_path_factory):
    """`evaluate --rerank CE --top-k 10 --rerank-fusion 0.5 --save-runs DIR`, run once: the
    command's report, printout and runs (DIR/runs, report DIR/report.json)."""
    out = tmp_path_factory.mktemp("evaluated")
    args = ["--model", str(tiny_run / "model"), "--dataset", str(tiny_beir), "--rerank", str(ce_run / "model")]
    args += ["--top-k", "10", "--rerank-fusion", "0.5", "--output", str(out / "report.json")]
    proc = run_cli_here("deepseek_tf.evaluate", *args, "--save-runs", str(out / "runs"))
    assert proc.returncode == 0, proc.stderr
    (out / "stdout.txt").write_text(proc.stdout)
    return out


def test_evaluate_rerank_rows_side_by_side(tiny_run, ce_run, tiny_beir, evaluated, tmp_path):
    stdout = (evaluated / "stdout.txt").read_text()
    assert "| dense |" in stdout and "| dense+rerank |" in stdout and "p95" in stdout
    report = json.loads((evaluated / "report.json").read_text())
    dense, reranked = report["dense"], report["dense+rerank"]
    # reranking permutes the same top-10: recall at depth >= 10 cannot change
    assert reranked["recall@100"] == pytest.approx(dense["recall@100"])
    assert report["dense+rerank+fusion"]["recall@100"] == pytest.approx(dense["recall@100"])
    assert reranked["rerank_depth"] == 10 and reranked["rerank_latency_ms_p95"] >= reranked["rerank_latency_ms_p50"] > 0
    assert reranked["latency_ms_p50"] > dense["latency_ms_p50"]  # end to end: first stage + reranking
    # both reranked rows against the first stage they reorder, printed with their 95% CI
    assert {report[n]["vs"]["system"] for n in ("dense+rerank", "dense+rerank+fusion")} == {"dense"}
    assert "vs" not in dense and "dense+rerank+fusion vs dense: ndcg@10 " in stdout
    # --save-runs: each system's ranking as a TREC run that trec_eval scores to the report's figures
    from deepseek_tf.data import load_beir, read_run
    from deepseek_tf.evaluate.metrics import trec_metrics

    runs = evaluated / "runs"
    qrels = load_beir(tiny_beir, "test").qrels
    assert sorted(p.name for p in runs.iterdir()) == ["dense+rerank+fusion.trec", "dense+rerank.trec", "dense.trec"]
    for name in ("dense", "dense+rerank", "dense+rerank+fusion"):
        means, _ = trec_metrics(qrels, read_run(runs / f"{name}.trec"))
        assert means["ndcg@10"] == pytest.approx(report[name]["ndcg@10"], abs=1e-4)
        assert means["map"] == pytest.approx(report[name]["map"], abs=1e-4)
    # --run: the saved dense run as a given first stage scores and reranks as the model did
    rerank = ["--rerank", str(ce_run / "model"), "--top-k", "10", "--rerank-fusion", "0.5"]
    given_run = ["--run", str(runs / "dense.trec"), "--dataset", str(tiny_beir)]
    proc = run_cli_here("deepseek_tf.evaluate", *given_run, *rerank, "--output", str(tmp_path / "given.json"))
    assert proc.returncode == 0, proc.stderr
    given = json.loads((tmp_path / "given.json").read_text())
    assert list(given) == ["run", "run+rerank", "run+rerank+fusion"] and given["run+rerank"]["vs"]["system"] == "run"
    for a, b in (("run", "dense"), ("run+rerank", "dense+rerank"), ("run+rerank+fusion", "dense+rerank+fusion")):
        assert given[a]["ndcg@10"] == pytest.approx(report[b]["ndcg@10"], abs=1e-4)
    # --run with --model: refused before any work, in a process of its own (one line on stderr, nothing else)
    first_stage = ["--model", str(tiny_run / "model"), "--dataset", str(tiny_beir)]
    bad = run_cli("deepseek_tf.evaluate", "--run", str(runs / "dense.trec"), *first_stage)
    assert bad.returncode == 1 and bad.stderr.strip() == "error: give one first stage: --model or --run, not both"
    bad = run_cli_here("deepseek_tf.evaluate", *first_stage, "--rerank", str(tiny_run / "model"))
    assert bad.returncode == 1 and "not a cross-encoder" in bad.stderr and "Traceback" not in bad.stderr
    bad = run_cli("deepseek_tf.evaluate", *first_stage, "--rerank", str(ce_run / "model"), "--rerank-fusion", "2")
    # refused by the command line's parser (exit 2), before any work
    assert bad.returncode == 2 and "--rerank-fusion: expected W or W1,W2,... (numbers in [0, 1])" in bad.stderr


def test_evaluate_fusion_sweep_gives_one_row_per_weight(tiny_run, ce_run, tiny_beir, tmp_path):
    """--rerank-fusion 0,0.5,1: one scoring pass, one '+rerank+fusion@W' row per weight (to pick W on a
    dev split). W = 0 is the first stage's order over its own top-k and W = 1 the cross-encoder's."""
    from deepseek_tf.data import load_beir, read_run
    from deepseek_tf.evaluate.report import evaluate, trec_metrics
    from deepseek_tf.retrieval.rerank import fuse

    report = evaluate(
        str(tiny_run / "model"),
        str(tiny_beir),
        top_k=10,
        rerank=str(ce_run / "model"),
        rerank_fusion=[0.0, 0.5, 1.0],
        verbose=False,
        runs_dir=tmp_path,
    )
    assert list(report) == [
        "dense",
        "dense+rerank",
        "dense+rerank+fusion@0",
        "dense+rerank+fusion@0.5",
        "dense+rerank+fusion@1",
    ]
    assert [report[f"dense+rerank+fusion@{w}"]["rerank_fusion"] for w in ("0", "0.5", "1")] == [0.0, 0.5, 1.0]
    assert report["dense+rerank+fusion@0"]["ndcg@10"] == pytest.approx(report["dense"]["ndcg@10"], abs=1e-4)
    assert report["dense+rerank+fusion@1"]["ndcg@10"] == pytest.approx(report["dense+rerank"]["ndcg@10"], abs=1e-4)
    qrels = load_beir(tiny_beir, "test").qrels
    fused = fuse(read_run(tmp_path / "dense.trec"), read_run(tmp_path / "dense+rerank.trec"), 0.5)
    assert trec_metrics(qrels, fused)[0]["ndcg@10"] == pytest.approx(
        report["dense+rerank+fusion@0.5"]["ndcg@10"], abs=1e-4
    )
    for weights, message in (
        ([0.5, 0.5], "a weight is given twice (0.5,0.5)"),
        ([0.3, 1.5], "--rerank-fusion must be in [0, 1], got 1.5"),
    ):
        with pytest.raises(UserError, match=re.escape(message)):
            evaluate(
                str(tiny_run / "model"),
                str(tiny_beir),
                rerank=str(ce_run / "model"),
                rerank_fusion=weights,
                verbose=False,
            )
    args = ["--model", str(tiny_run / "model"), "--dataset", str(tiny_beir), "--rerank", str(ce_run / "model")]
    bad = run_cli("deepseek_tf.evaluate", *args, "--rerank-fusion", "0.3,x")  # in a process of its own
    assert bad.returncode == 2 and "expected W or W1,W2,..." in bad.stderr and "Traceback" not in bad.stderr


def test_search_reranks_as_evaluate_does(tiny_run, ce_run, tiny_beir, evaluated, tmp_path, capsys):
    """search --rerank: the retriever's top-k rescored by the cross-encoder (and fused) gives each
    query the scores evaluate's dense+rerank(+fusion) run gives it, best first, cut to --top-k."""
    from deepseek_tf.data import load_beir, read_run
    from deepseek_tf.index.search import main, search

    model, corpus, ce = str(tiny_run / "model"), tiny_beir / "corpus.jsonl", str(ce_run / "model")
    # evaluate --top-k 10 --rerank-fusion 0.5 --save-runs: each system's run
    runs = {n: read_run(evaluated / "runs" / f"{n}.trec") for n in ("dense", "dense+rerank", "dense+rerank+fusion")}
    ds = load_beir(tiny_beir, "test")
    qid = sorted(ds.qrels)[0]
    plain = search(model, corpus, [ds.queries[qid]], top_k=10, verbose=False)[0]
    assert {h["id"]: h["score"] for h in plain["hits"]} == pytest.approx(runs["dense"][qid], abs=1e-4)
    for fusion, name in ((None, "dense+rerank"), (0.5, "dense+rerank+fusion")):
        got = search(
            model, corpus, [ds.queries[qid]], top_k=4, rerank=ce, rerank_depth=10, fusion=fusion, verbose=False
        )[0]
        want = sorted(runs[name][qid].items(), key=lambda x: -x[1])[:4]
        assert [h["id"] for h in got["hits"]] == [d for d, _ in want]
        assert [h["score"] for h in got["hits"]] == pytest.approx([s for _, s in want], abs=1e-4)
        assert [h["reranker_score"] for h in got["hits"]] == pytest.approx(
            [runs["dense+rerank"][qid][h["id"]] for h in got["hits"]], abs=1e-4
        )
        assert [h["retriever_score"] for h in got["hits"]] == pytest.approx(
            [runs["dense"][qid][h["id"]] for h in got["hits"]], abs=1e-4
        )
        assert got["latency_ms"] > got["rerank_ms"] > 0
    args = [
        "--model",
        model,
        "--corpus",
        str(corpus),
        "--query",
        "espresso machine",
        "--top-k",
        "2",
        "--rerank",
        ce,
        "--rerank-depth",
        "5",
        "--rerank-fusion",
        "0.3",
    ]
    assert main(args) == 0
    lines = capsys.readouterr().out.splitlines()
    assert "reranking" in lines[0] and [l.split()[0] for l in lines[1:]] == ["1.", "2."]
    # bad input: one line, exit 1, and no index written
    ix = tmp_path / "ix"
    for extra, message, code in (
        (["--rerank-depth", "1"], "--rerank-depth (1) must be >= --top-k (2)", 1),
        (["--rerank-fusion", "1.5"], "--rerank-fusion: must be <= 1, got '1.5'", 2),  # refused by the parser
        (["--rerank", model], "a dual_encoder model, not a cross-encoder", 1),
    ):
        try:
            rc = main(args + ["--index", str(ix)] + extra)
        except SystemExit as e:  # a usage error: argparse exits
            rc = e.code
        assert rc == code
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and message in err[0] and not ix.exists()
    assert main(args[:8] + ["--rerank-fusion", "0.3"]) == 1  # fusion without --rerank
    assert capsys.readouterr().err.strip() == "error: --rerank-fusion needs --rerank CROSS_ENCODER"


def test_evaluate_search_and_serve_rank_a_query_alike(tiny_run, ce_run, tiny_beir, tmp_path, capsys, monkeypatch):
    """The one query flow (retrieval/pipeline.py): each query gets the same ranking (ids, order,
    scores within 1e-5) from evaluate's run, `search --json` and serve's /search, for dense, BM25
    and hybrid retrieval, reranked by a cross-encoder and fused with the retriever."""
    pytest.importorskip("fastapi")
    from fastapi.testclient import TestClient

    from deepseek_tf.data import load_beir
    from deepseek_tf.evaluate import report
    from deepseek_tf.index.cli import main as index_main
    from deepseek_tf.index.search import main as search_main
    from deepseek_tf.retrieval.ranking import ranking
    from deepseek_tf.serve.app import create_app
    from deepseek_tf.serve.service import SearchService, ServiceOptions

    model, corpus, ce, ix = str(tiny_run / "model"), tiny_beir / "corpus.jsonl", str(ce_run / "model"), tmp_path / "ix"
    assert index_main(["--model", model, "--corpus", str(corpus), "--output", str(ix), "--quiet"]) == 0
    runs = {}  # evaluate's runs as they are scored (a run file rounds scores to 6 decimals)
    monkeypatch.setattr(report, "write_run", lambda run, path, tag: runs.__setitem__(tag, run))
    for first_stage in (model, None):  # rows dense, bm25, hybrid, dense+rerank(+fusion); then bm25+rerank(+fusion)
        options = {"baseline": "bm25", "rerank": ce, "rerank_fusion": 0.5, "verbose": False, "runs_dir": tmp_path}
        report.evaluate(first_stage, str(tiny_beir), **options)
    ds = load_beir(tiny_beir, "test")
    qids = sorted(ds.qrels)[:2]
    queries = [ds.queries[q] for q in qids]

    def same(got: list[tuple[str, float]], want: list[tuple[str, float]], what: str) -> None:
        assert [d for d, _ in got] == [d for d, _ in want], what
        np.testing.assert_allclose([s for _, s in got], [s for _, s in want], atol=1e-5, err_msg=what)

    def searched(mode: str, rerank: list[str]) -> list[list[tuple[str, float]]]:
        argv = ["--model", model, "--corpus", str(corpus), "--index", str(ix), "--top-k", "10", "--json"]
        assert search_main(argv + ["--mode", mode] + [a for q in queries for a in ("--query", q)] + rerank) == 0
        return [[(h["id"], h["score"]) for h in r["hits"]] for r in json.loads(capsys.readouterr().out)]

    service = SearchService.open(ix, rerank=ce, options=ServiceOptions(max_wait_ms=1, cache_size=0))
    with TestClient(create_app(service)) as client:

        def served(query: str, mode: str, rerank: bool, fusion: float | None) -> list[tuple[str, float]]:
            body = {"query": query, "k": 10, "mode": mode, "rerank": rerank}
            r = client.post("/search", json=body if fusion is None else {**body, "rerank_fusion": fusion})
            assert r.status_code == 200, r.text
            return [(h["id"], h["score"]) for h in r.json()["results"]]

        for mode in ("dense", "bm25", "hybrid"):
            for rerank, fusion, suffix in ((False, None, ""), (True, None, "+rerank"), (True, 0.5, "+rerank+fusion")):
                flags = ["--rerank", ce] if rerank else []
                flags += ["--rerank-fusion", str(fusion)] if fusion is not None else []
                for q, query, hits in zip(qids, queries, searched(mode, flags)):
                    what = f"{mode}{suffix} {query!r}"
                    same(served(query, mode, rerank, fusion), hits, what + ": serve vs search")
                    if mode + suffix in runs:  # evaluate reranks its first stage: no hybrid+rerank row
                        same(hits, ranking(runs[mode + suffix][q], 10), what + ": search vs evaluate")
    service.close()
    assert {"dense", "bm25", "hybrid", "dense+rerank+fusion", "bm25+rerank"} <= set(runs)


def test_saved_model_score_endpoint_matches_keras(ce_run, tmp_path):
    from deepseek_tf.export.saved_model import export_saved_model
    from deepseek_tf.retrieval.rerank import Reranker

    meta = export_saved_model(ce_run / "model", tmp_path / "ce_sm")
    assert meta["kind"] == "cross_encoder" and meta["checks"]["score_max_abs_diff"] <= 1e-5
    queries, docs = ["summer dress", "轻便笔记本", ""], ["light summer dress", "tent", "coffee beans"]
    keras_scores = Reranker.load(str(ce_run / "model")).score_pairs(queries, docs)
    loaded = tf.saved_model.load(str(tmp_path / "ce_sm"))
    np.testing.assert_allclose(loaded.score(tf.constant(queries), tf.constant(docs)).numpy(), keras_scores, atol=1e-5)
    # the SavedModel also works as --rerank MODEL
    np.testing.assert_allclose(
        Reranker.load(str(tmp_path / "ce_sm")).score_pairs(queries, docs), keras_scores, atol=1e-5
    )
