"""The pure parts of `make bench`: FLOP counts, ratios, targets, the table, the README splice.

No timing is asserted here (speed targets are the benchmark's job, not the suite's).
"""

import numpy as np
import pytest
from conftest import run_cli

from deepseek_tf.bench.report import (
    END,
    START,
    cpu_model,
    encode_row,
    evaluate_targets,
    flops_per_token,
    render_markdown,
    replace_between_markers,
    token_weighted_length,
)
from deepseek_tf.errors import UserError


def test_flops_per_token_reproduces_the_issue_figure():
    # per layer: 8·384² = 1,179,648; 4·384·1536 = 2,359,296; 4·128·384 = 196,608
    # sum 3,735,552 × 6 layers = 22,413,312 FLOPs (multiply-add = 2) ≈ the issue's 22 MFLOP/token
    assert flops_per_token(6, 384, 1536, 128) == 22_413_312
    # attention term grows with L: +4·H per extra token per layer -> L=256 adds 6·4·128·384 = 1,179,648
    assert flops_per_token(6, 384, 1536, 256) - flops_per_token(6, 384, 1536, 128) == 1_179_648


def test_token_weighted_length():
    # texts of 2 and 6 tokens: Σn² / Σn = (4 + 36) / 8 = 5, so 8 tokens × flops(5) is the true total
    assert token_weighted_length([2, 6]) == 5.0
    total = 2 * flops_per_token(1, 4, 8, 2) + 6 * flops_per_token(1, 4, 8, 6)
    assert total == pytest.approx(8 * flops_per_token(1, 4, 8, token_weighted_length([2, 6])))


def test_cpu_model_from_cpuinfo_text():
    text = (
        "processor\t: 0\nvendor_id\t: AuthenticAMD\ncpu family\t: 25\nmodel\t\t: 17\n"
        "model name\t: AMD EPYC 9654\nflags\t\t: fpu avx2 fma avx512f avx512_vnni\n\nprocessor\t: 1\n"
        "model name\t: ignored second core\n"
    )
    assert cpu_model(text) == "AMD EPYC 9654 (family 25, model 17; avx2 fma avx512f avx512_vnni)"


def test_encode_row_rates_and_cosine():
    vecs = np.array([[1.0, 0.0], [0.6, 0.8]])
    ref = np.array([[1.0, 0.0], [0.8, 0.6]])
    row = encode_row("x", "keras", texts=10, tokens=1500, seconds=2.0, vecs=vecs, reference=ref)
    assert row["docs_per_s"] == 5.0 and row["tokens_per_s"] == 750.0
    assert row["min_cosine_vs_peer"] == pytest.approx(0.96)  # 0.6·0.8 + 0.8·0.6 = 0.96


def _results(saved: float = 12.0, int8: float = 25.0, ours_train: float = 3.0) -> dict:
    def row(kind, docs_per_s, share):
        return {
            "system": kind,
            "kind": kind,
            "measured": True,
            "docs_per_s": docs_per_s,
            "tokens_per_s": docs_per_s * 200,
            "matmul_share": share,
        }

    return {
        "date": "2026-11-23 01:40 UTC",
        "cpu": "Test CPU",
        "threads": 2,
        "quick": False,
        "matmul": {"n": 2048, "tf_flops": 100e9},
        "encode_stats": {
            "texts": 1400,
            "tokens": 280000,
            "mean_tokens": 200.0,
            "max_length": 256,
            "batch_size": 32,
            "flops_per_token": 23e6,
            "token_weighted_length": 210,
            "flops_per_token_at_128": 22.4e6,
        },
        "encode": [
            row("peer", 10.0, 0.46),
            row("saved_model", saved, 0.55),
            row("tflite_dynamic", int8, 1.15),
            {"system": "TFLite float32", "kind": "tflite_fp32", "measured": False, "note": "not measured: x"},
        ],
        "training": {"batch_size": 32, "steps": 10, "ours_examples_per_s": ours_train, "peer_examples_per_s": 4.0},
        "search": {
            "cranfield": {"queries": 225, "docs": 1400, "k": 10, "ours_qps": 5e4, "peer_qps": 1e5, "same_top_k": 1.0}
        },
    }


def test_targets_are_ratios_within_the_run():
    status = evaluate_targets(_results())
    assert status["saved_model_vs_st"] == {"value": 1.2, "bound": 1.0, "met": True}  # 12 / 10
    assert status["tflite_dynamic_vs_st"]["value"] == 2.5 and status["tflite_dynamic_vs_st"]["met"]
    assert status["training_vs_st"]["value"] == 0.75 and status["training_vs_st"]["met"] is False  # 3 / 4
    # best path = most tokens/s among ours (the int8 row), its share 1.15 >= 0.5
    assert status["best_matmul_share"]["system"] == "tflite_dynamic" and status["best_matmul_share"]["met"]
    assert status["best_float32_share"] == {"value": 0.55, "system": "saved_model"}


def test_missing_rows_are_not_measured_not_met():
    results = _results()
    results["encode"] = [r for r in results["encode"] if r["kind"] != "tflite_dynamic"]
    del results["training"]
    status = evaluate_targets(results)
    assert status["tflite_dynamic_vs_st"]["met"] is None and status["training_vs_st"]["met"] is None


def test_markdown_table_says_missed_and_not_measured():
    table = render_markdown(_results(saved=8.0))
    lines = table.splitlines()
    saved = next(line for line in lines if line.startswith("| saved_model"))
    assert "0.80×" in saved and "≥ 1.0×: **missed**" in saved  # 8 / 10
    assert "55%" in saved  # share column
    assert any("TFLite float32" in line and "not measured: x" in line for line in lines)
    training = next(line for line in lines if line.startswith("| training"))
    assert "0.75×" in training and "**missed**" in training
    search = next(line for line in lines if line.startswith("| exact search"))
    assert "0.50×" in search  # 5e4 / 1e5
    assert "2026-11-23 01:40 UTC" in table and "Test CPU" in table and "2 threads" in table


def test_readme_splice_replaces_only_between_markers():
    text = f"# x\n\n## Performance\n\nintro\n\n{START}\nold table\n{END}\n\n## Next\nkeep\n"
    out = replace_between_markers(text, "| new |\n")
    assert out == f"# x\n\n## Performance\n\nintro\n\n{START}\n| new |\n{END}\n\n## Next\nkeep\n"
    assert replace_between_markers(out, "| new |\n") == out  # idempotent
    with pytest.raises(UserError, match="markers"):
        replace_between_markers("# no markers\n", "| t |")


def test_cli_missing_dataset_is_one_line_error(tmp_path):
    result = run_cli("deepseek_tf.bench", "--dataset", str(tmp_path / "absent"), "--output-dir", str(tmp_path))
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        f"error: --dataset {tmp_path / 'absent'}: directory not found "
        "(pass a BEIR directory, e.g. --dataset ../shared/data/cranfield)"
    ]
    assert not (tmp_path / "results.json").exists()


def test_contention_note_only_when_the_load_exceeds_the_cpus():
    from deepseek_tf.bench.report import contention_note

    quiet = {
        "threads": 2,
        "load_before": {"cpus": 2, "load_avg_1m": 1.1},
        "load_after": {"cpus": 2, "load_avg_1m": 2.4},
    }
    assert contention_note(quiet) == ""  # 2.4 <= 1.25 × 2 CPUs
    busy = {**quiet, "load_after": {"cpus": 2, "load_avg_1m": 9.5}}
    assert "load average 1.1 → 9.5 on 2 CPUs" in contention_note(busy)


def test_rerank_row_rates_and_percentiles():
    from deepseek_tf.bench.report import rerank_row

    # 3 queries of 100 pairs in 2 s, 4 s, 6 s: 300 pairs / 12 s = 25 pairs/s; p50 = 4,000 ms;
    # p95 = 4,000 + 0.9 · (6,000 − 4,000) = 5,800 ms (linear between the 2nd and 3rd of 3);
    # against a peer at 20 pairs/s: 1.25×
    row = rerank_row("x", "keras", 300, [2.0, 4.0, 6.0], 20.0, 1e-6)
    assert row["pairs_per_s"] == pytest.approx(25.0) and row["seconds"] == pytest.approx(12.0)
    assert row["query_ms_p50"] == pytest.approx(4000.0) and row["query_ms_p95"] == pytest.approx(5800.0)
    assert row["vs_peer"] == pytest.approx(1.25) and row["max_abs_diff_vs_keras"] == 1e-6
    assert rerank_row("peer", "peer", 300, [2.0, 4.0, 6.0], None)["vs_peer"] is None


def test_rerank_table_rows_and_skip():
    from deepseek_tf.bench.report import rerank_lines, rerank_row

    rerank = {
        "queries": 2,
        "pairs": 200,
        "max_length": 256,
        "batch_size": 32,
        "parity": {"pairs": 20, "min_cls_cosine_vs_peer": 0.99999},
        "rows": [
            rerank_row("peer", "peer", 200, [5.0, 5.0], 20.0),
            rerank_row("ours", "tflite_fp32", 200, [4.0, 4.0], 20.0, 1.4e-6),
            {"system": "int8", "kind": "tflite_dynamic", "measured": False, "note": "not measured: x"},
        ],
    }
    lines = rerank_lines(rerank)
    assert "| peer | 20.0 | 5,000 / 5,000 | 1.00× | — |" in lines
    assert "| ours | 25.0 | 4,000 / 4,000 | 1.25× | 1.4e-06 |" in lines  # 200 pairs / 8 s
    assert "| int8 | — | — | — | not measured: x |" in lines
    assert "2 Cranfield test queries × BM25's top-100 = 200" in lines[1] and "1.0000 over 20 pairs" in lines[1]
    table = render_markdown({"date": "d", "cpu": "c", "threads": 2, "encode": [], "rerank": rerank})
    assert "| ours | 25.0 |" in table
    assert rerank_lines(None) == [] and "| rerank |" not in render_markdown({"date": "d", "cpu": "c", "threads": 2})


def test_threads_default_to_the_cpus_this_process_may_use(monkeypatch):
    import os

    from deepseek_tf.bench import bench

    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 2, 5}, raising=False)
    assert bench.parse_args(["--dataset", "d"]).threads == 3  # not os.cpu_count()
    assert bench.parse_args(["--dataset", "d", "--threads", "1"]).threads == 1


def test_cli_negative_rerank_queries_is_one_line_error(tmp_path):
    result = run_cli(
        "deepseek_tf.bench", "--dataset", str(tmp_path), "--rerank-queries", "-1", "--output-dir", str(tmp_path / "out")
    )
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        "error: --threads and --batch-size must be >= 1, --max-length >= 8, --rerank-queries >= 0"
    ]
    assert not (tmp_path / "out").exists()


def test_rerank_pairs_are_bm25s_top_k_per_test_query(tmp_path):
    import json

    from deepseek_tf.bench.rerank import rerank_pairs

    # BM25 (k1 1.5, b 0.75, avgdl 2) of "alpha" in docs holding it 1, 2, 3 times (length = count):
    # tf / (tf + 1.5 · (0.25 + 0.75 · tf / 2)) = 0.516, 0.571, 0.590 times the same idf, so the
    # 3-alpha doc ranks first; "beta gamma" does not match and a depth of 2 drops the 1-alpha doc.
    docs = {"d1": "alpha", "d2": "alpha alpha", "d3": "alpha alpha alpha", "d4": "beta gamma"}
    (tmp_path / "qrels").mkdir()
    (tmp_path / "corpus.jsonl").write_text(
        "".join(json.dumps({"_id": d, "title": "", "text": t}) + "\n" for d, t in docs.items())
    )
    (tmp_path / "queries.jsonl").write_text(
        '{"_id": "q2", "text": "alpha"}\n{"_id": "q1", "text": "gamma"}\n{"_id": "q3", "text": "alpha"}\n'
    )
    (tmp_path / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\nq2\td1\t1\nq1\td4\t1\nq3\td2\t1\n")
    got = rerank_pairs(tmp_path, 2, depth=2)  # the first two judged test queries by id: q1, q2
    assert got == [("gamma", ["beta gamma"]), ("alpha", ["alpha alpha alpha", "alpha alpha"])]
