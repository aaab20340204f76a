import json
import types

import pytest
from conftest import ROOT, run_cli, run_cli_here

from deepseek_tf.errors import UserError
from deepseek_tf.evaluate import report as evaluate_module
from deepseek_tf.evaluate.cli import main
from deepseek_tf.evaluate.report import METRIC_KEYS, drop_identical_ids, evaluate, hybrid_run
from deepseek_tf.evaluate.significance import paired_comparison

SPEC_KEYS = METRIC_KEYS + ("queries", "latency_ms_p50", "latency_ms_p95", "docs_per_s")


def test_cli_dense_bm25_hybrid_rows_json_and_plot(tiny_run, tiny_beir, tmp_path):
    out, png = tmp_path / "r.json", tmp_path / "r.png"
    args = ["--model", str(tiny_run / "model"), "--dataset", str(tiny_beir), "--baseline", "bm25"]
    proc = run_cli_here("deepseek_tf.evaluate", *args, "--output", str(out), "--plot", str(png))
    assert proc.returncode == 0, proc.stderr
    rows = [line.split("|")[1].strip() for line in proc.stdout.splitlines() if line.startswith("| ")]
    assert rows == ["system", "dense", "bm25", "hybrid"]
    report = json.loads(out.read_text())
    assert list(report) == ["dense", "bm25", "hybrid"]
    for name, r in report.items():
        for key in SPEC_KEYS + ("peak_rss_mb",):
            assert r[key] is not None and r[key] >= 0, (name, key)
        assert r["queries"] == 6 and set(r["per_query"]) == {
            f"q-{t}-2" for t in ("dress", "laptop", "phone", "shoes", "coffee", "tent")
        }
        assert all("latency_ms" in m for m in r["per_query"].values())
        curve = r["recall_curve"]  # mean Recall@1..100, the plotted figures
        assert len(curve) == 100 and curve == sorted(curve)
        assert curve[9] == pytest.approx(r["recall@10"]) and curve[99] == pytest.approx(r["recall@100"])
        assert r["latency_ms_p50"] <= r["latency_ms_p95"]
    # fused: each query pays for both systems
    assert report["hybrid"]["latency_ms_p50"] >= report["bm25"]["latency_ms_p50"]
    assert report["bm25"]["bm25"]["method"] == "lucene"
    # each system against the first stage it builds on, from the per-query figures above
    assert "vs" not in report["bm25"] and report["dense"]["vs"]["system"] == "bm25"
    hybrid = report["hybrid"]["vs"]
    assert hybrid["system"] == "dense" and hybrid["ndcg@10"]["delta"] == pytest.approx(
        report["hybrid"]["ndcg@10"] - report["dense"]["ndcg@10"]
    )
    assert f"hybrid vs dense: ndcg@10 {hybrid['ndcg@10']['delta']:+.4f} (95% CI" in proc.stdout
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000


def test_paired_comparison_by_hand():
    base = {"a": 0.0, "b": 0.0, "c": 0.0, "unjudged": 0.9}
    # differences 0.1, 0.2, 0.3 (mean 0.2) on the 3 shared queries; of the 8 sign assignments only
    # +++ and −−− reach |mean| 0.2: p = 2/8. Every resample lies between 0.1 and 0.3.
    c = paired_comparison(base, {"a": 0.1, "b": 0.2, "c": 0.3})
    assert c["delta"] == pytest.approx(0.2) and c["p"] == 0.25 and c["queries"] == 3
    assert 0.1 - 1e-9 <= c["ci95"][0] < 0.2 < c["ci95"][1] <= 0.3 + 1e-9
    # differences 0 and 1: resampled means 0, 0.5, 1 with chances 1/4, 1/2, 1/4 -> CI [0, 1];
    # every sign assignment gives |mean| 0.5: p = 1
    c = paired_comparison({"a": 0.0, "b": 0.0}, {"a": 0.0, "b": 1.0})
    assert c["ci95"] == [0.0, 1.0] and c["p"] == 1.0
    # 40 queries, each +0.05: the sampled test counts only the observed assignment among 10,001
    c = paired_comparison({str(i): 0.5 for i in range(40)}, {str(i): 0.55 for i in range(40)})
    assert c["ci95"] == pytest.approx([0.05, 0.05]) and c["p"] == pytest.approx(1 / 10_001)


def test_compare_two_saved_reports(tmp_path, capsys):
    def report(path, system, per_query):  # the shape `evaluate --output` writes
        rows = {q: {k: v for k in METRIC_KEYS} for q, v in per_query.items()}
        means = {k: sum(per_query.values()) / len(per_query) for k in METRIC_KEYS}
        path.write_text(json.dumps({system: {**means, "per_query": rows}}))
        return str(path)

    base = report(tmp_path / "a.json", "dense", {"q1": 0.0, "q2": 0.0, "q3": 0.0})
    other = report(tmp_path / "b.json", "dense", {"q1": 0.1, "q2": 0.2, "q3": 0.3, "q4": 1.0})
    assert main(["--compare", base, f"{other}:dense"]) == 0
    out = capsys.readouterr().out
    # differences 0.1, 0.2, 0.3 on the 3 shared queries: mean +0.2, exact sign-flip p = 2/8
    assert f"{other}:dense vs {base}:dense" in out and "3 queries in both" in out
    assert "| ndcg@10 | 0.0000 | 0.4000 | +0.2000 | " in out and out.count("| 0.2500 |") == len(METRIC_KEYS)
    for args, message in (
        (["--compare", base, f"{other}:hybrid"], "no system 'hybrid' (it has dense)"),
        (["--compare", base, str(tmp_path / "none.json")], "none.json: no such file"),
        (["--model", "all-MiniLM-L6-v2"], "--dataset is required"),
    ):
        assert main(args) == 1
        assert message in capsys.readouterr().err
    report(tmp_path / "c.json", "dense", {"other": 0.5})
    assert main(["--compare", base, str(tmp_path / "c.json")]) == 1
    assert "share no query" in capsys.readouterr().err


def _write(directory, corpus, queries, qrels):
    (directory / "qrels").mkdir(parents=True)
    (directory / "corpus.jsonl").write_text("".join(json.dumps(r) + "\n" for r in corpus))
    (directory / "queries.jsonl").write_text("".join(json.dumps(r) + "\n" for r in queries))
    (directory / "qrels" / "test.tsv").write_text(
        "query-id\tcorpus-id\tscore\n" + "".join(f"{q}\t{d}\t{s}\n" for q, d, s in qrels)
    )
    return directory


def test_bad_input_is_counted_and_the_rest_evaluated(tmp_path, capsys):
    corpus = [
        {"_id": "d1", "title": "wing", "text": "wing flutter at transonic speed"},
        {"_id": "d1", "title": "dup", "text": "a duplicate id"},
        {"_id": "d2", "title": "", "text": ""},
        {"_id": "d3", "title": "nozzle", "text": "nozzle heat transfer"},
    ]
    queries = [
        {"_id": "q1", "text": "wing flutter"},
        {"_id": "q1", "text": "again"},
        {"_id": "q2", "text": "  "},
        {"_id": "q3", "text": "heat transfer in nozzles"},
    ]
    qrels = [("q1", "d1", 2), ("q1", "d2", 1), ("q1", "missing", 1), ("q2", "d3", 1), ("q3", "d3", 1), ("q3", "d1", 0)]
    results = evaluate(None, str(_write(tmp_path / "bad", corpus, queries, qrels)), baseline="bm25")
    err = capsys.readouterr().err.splitlines()
    # d1 dup, d2 empty, q1 dup, q2 empty; unknown: (q1,d2) empty doc, (q1,missing), (q2,d3) empty query
    expected = [
        "dropped 1 duplicate doc ids (first: 'd1')",
        "dropped 1 empty docs",
        "dropped 1 empty queries",
        "dropped 1 duplicate query ids (first: 'q1')",
        "dropped 3 judgments with unknown ids",
    ]
    assert sorted(results["bm25"]["warnings"]) == sorted(expected)
    assert sum(line.startswith("warning: ") for line in err) == 5
    assert "5 warning(s); evaluating the remaining 2 queries" in err
    r = results["bm25"]
    assert list(results) == ["bm25"] and r["queries"] == 2
    assert r["per_query"]["q1"]["ndcg@10"] == 1.0 and r["per_query"]["q3"]["mrr@10"] == 1.0


def test_empty_and_unusable_qrels_stop_with_one_line(tmp_path, capsys):
    corpus = [{"_id": "d1", "text": "wing"}]
    queries = [{"_id": "q1", "text": "wing"}]
    empty = _write(tmp_path / "empty", corpus, queries, [])
    with pytest.raises(UserError, match="no judgments"):
        evaluate(None, str(empty), baseline="bm25")
    unknown = _write(tmp_path / "unknown", corpus, queries, [("q1", "nope", 1)])
    with pytest.raises(UserError, match="no judged queries left"):
        evaluate(None, str(unknown), baseline="bm25", verbose=False)
    assert main(["--dataset", str(tmp_path / "missing"), "--baseline", "bm25"]) == 1
    assert capsys.readouterr().err.splitlines() == [f"error: dataset directory not found: {tmp_path / 'missing'}"]


def test_identical_ids_dropped_only_on_request():
    run = {"1": {"1": 0.9, "2": 0.5}, "2": {"1": 0.3}}
    assert drop_identical_ids(run) == {"1": {"2": 0.5}, "2": {"1": 0.3}}


def test_hybrid_fuses_and_adds_latencies(monkeypatch):
    # A clock that moves 0.25 ms per reading, so the fusion time is exact rather than wall-clock
    # (a bound on real time failed once on a loaded 2-core CI run: 12.2 ms).
    ticks = iter([0.0, 0.00025])
    monkeypatch.setattr(evaluate_module, "time", types.SimpleNamespace(perf_counter=lambda: next(ticks)))
    dense = ({"q": {"a": 0.9, "b": 0.8}}, {"latency_ms": {"q": 10.0}, "index_s": 2.0, "docs_per_s": 50.0})
    bm25 = ({"q": {"b": 7.0, "c": 1.0}}, {"latency_ms": {"q": 1.0}, "index_s": 0.5, "docs_per_s": 200.0})
    run, stats = hybrid_run(dense, bm25, top_k=10, rrf_k=60)
    # b: 1/62 + 1/61, a: 1/61, c: 1/62
    assert list(run["q"]) == ["b", "a", "c"] and run["q"]["b"] == pytest.approx(1 / 62 + 1 / 61)
    assert stats["latency_ms"]["q"] == pytest.approx(11.25)  # 10 + 1 ms + 0.25 ms of fusion
    assert stats["docs_per_s"] == pytest.approx(100 / 2.5)  # 100 docs indexed twice in 2 + 0.5 s


def test_dev_fraction_scores_the_queries_training_held_out(tiny_run, tiny_beir):
    """--split train --dev-fraction F: exactly the dev queries a training run with data.dev_fraction F
    (same data.dev_seed) held out, so a fusion weight can be picked on queries neither stage saw."""
    from deepseek_tf.config import load_config
    from deepseek_tf.data import load_beir
    from deepseek_tf.data.splits import split_train_dev

    config = load_config(
        ROOT / "configs" / "tiny.yaml", [f"data.dataset={tiny_beir}", "data.dev_fraction=0.34", "data.dev_seed=7"]
    )
    trained_on, held_out = split_train_dev(load_beir(tiny_beir, "train", unknown_ids="drop"), config)
    report = evaluate(str(tiny_run / "model"), str(tiny_beir), split="train", dev=(0.34, 7), verbose=False)
    assert set(report["dense"]["per_query"]) == set(held_out.qrels) and report["dense"]["queries"] == 4
    assert not set(held_out.qrels) & set(trained_on.qrels) and len(trained_on.qrels) == 8
    other_seed = evaluate(str(tiny_run / "model"), str(tiny_beir), split="train", dev=(0.34, 8), verbose=False)
    assert set(other_seed["dense"]["per_query"]) != set(held_out.qrels)
    for bad in (0.0, 1.0):
        with pytest.raises(UserError, match=r"--dev-fraction must be in \(0, 1\)"):
            evaluate(str(tiny_run / "model"), str(tiny_beir), split="train", dev=(bad, 42), verbose=False)
    bad = run_cli(
        "deepseek_tf.evaluate", "--model", str(tiny_run / "model"), "--dataset", str(tiny_beir), "--dev-seed", "7"
    )
    assert bad.returncode == 1
    assert bad.stderr.strip() == "error: --dev-seed needs --dev-fraction (the dev split it seeds)"
