"""Evaluation: systems (dense, BM25, hybrid, reranked) scored on a BEIR split, the report and its table.

Every reported figure comes from pytrec_eval (trec_eval's own code). Systems: `dense` (the
model, exact search), `bm25` (`--baseline bm25`) and `hybrid` (both fused by reciprocal rank);
dense queries, hybrid fusion and reranking run through the one query flow that `search` and
`serve` run (`retrieval/pipeline.py`), each system timed on its own.
"""

from __future__ import annotations

import json
import resource
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from deepseek_tf.data import BeirDataset, describe_dropped, doc_images, load_beir, load_run, write_run
from deepseek_tf.errors import UserError
from deepseek_tf.evaluate.metrics import CURVE_MAX_K, Run, recall_curve, trec_metrics
from deepseek_tf.evaluate.significance import METRIC_KEYS, add_comparisons
from deepseek_tf.files import atomic_write

COST_KEYS = ("latency_ms_p50", "latency_ms_p95", "docs_per_s", "peak_rss_mb")


def system_names(
    model: str | None,
    baseline: str | None,
    first_run: str | Path | None,
    rerank: str | None = None,
    rerank_fusion: float | Sequence[float] | None = None,
    rerank_stage: str | None = None,
) -> list[str]:
    """The systems `evaluate` will score with these options (so the run files --save-runs will write)."""
    from deepseek_tf.retrieval.rerank import rerank_suffixes

    names = [n for n, given in (("dense", model), ("bm25", baseline), ("run", first_run)) if given]
    names += ["hybrid"] if model and baseline else []
    if rerank:
        first = first_stage_name(model, first_run, rerank_stage)
        names += [first + suffix for suffix in rerank_suffixes(rerank_fusion)]
    return names


def first_stage_name(model: str | None, first_run: str | Path | None, rerank_stage: str | None) -> str:
    """The system --rerank reorders: --rerank-stage bm25, else a --run, else --rerank-stage hybrid,
    else the dense model's, else BM25's."""
    if rerank_stage == "bm25":
        return "bm25"
    if first_run is not None:
        return "run"
    if rerank_stage == "hybrid":
        return "hybrid"
    return "dense" if model is not None else "bm25"


def _is_our_run(path: Path, tag: str) -> bool:
    """A TREC run file `write_run` wrote for system `tag`: every line `qid Q0 docid rank score tag`."""
    if path.is_symlink() or not path.is_file():
        return False
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError):
        return False
    fields = [line.split() for line in lines if line.strip()]
    return bool(lines) and all(len(f) == 6 and f[1] == "Q0" and f[5] == tag for f in fields)


def check_run_files(runs_dir: str | Path, names: Sequence[str]) -> None:
    """Before anything is written: RUNS_DIR/<name>.trec may be (re)written only where it is absent
    or a run file of ours for that system (no command rewrites a file it did not create)."""
    runs_dir = Path(runs_dir)
    if runs_dir.exists() and not runs_dir.is_dir():
        raise UserError(f"--save-runs {runs_dir}: not a directory; nothing evaluated")
    for name in names:
        path = runs_dir / f"{name}.trec"
        if (path.exists() or path.is_symlink()) and not _is_our_run(path, name):
            raise UserError(
                f"--save-runs {runs_dir}: {path} exists and is not a run file evaluate wrote for "
                f"system {name!r}; nothing written (choose another --save-runs directory)"
            )


def drop_identical_ids(run: Run) -> Run:
    """BEIR's convention (ignore_identical_ids): a retrieved doc whose id equals the query id is dropped."""
    return {q: {d: s for d, s in docs.items() if d != q} for q, docs in run.items()}


def peak_rss_mb() -> float:
    """Peak resident set size of this process so far, in MiB (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _latency_stats(latencies: dict[str, float], n_docs: int, index_s: float) -> dict:
    values = list(latencies.values())
    return {
        "latency_ms_p50": float(np.percentile(values, 50)) if values else None,
        "latency_ms_p95": float(np.percentile(values, 95)) if values else None,
        "docs_per_s": n_docs / max(index_s, 1e-9),
        "index_s": index_s,
        "latency_ms": latencies,
    }


def dense_run(
    embedder, ds: BeirDataset, top_k: int = 100, batch_size: int = 64, use_title: bool = True, progress: bool = False
) -> tuple[Run, dict[str, float]]:
    """Encodes the corpus (length-sorted batches; with `progress` a bar on a terminal, plain lines
    in a log), then answers each judged query alone, so latency is per query (encode + search).
    stats["latency_ms"] holds each query's latency."""
    from deepseek_tf.retrieval.pipeline import SearchPipeline, exact_dense

    doc_ids = list(ds.corpus)
    texts = [ds.doc_text(d, use_title) for d in doc_ids]
    start = time.perf_counter()
    images = doc_images(ds.corpus, doc_ids, embedder.image_dim, reader=embedder.image_reader, progress=progress)
    doc_vecs = embedder.encode_docs(texts, batch_size, progress=progress, images=images)
    encode_s = time.perf_counter() - start
    pipeline = SearchPipeline(encode_queries=embedder.encode_queries, dense=exact_dense(doc_vecs, doc_ids))
    run, latencies = {}, {}
    qids = [q for q in ds.qrels if q in ds.queries]
    if qids:
        embedder.encode_queries([ds.queries[qids[0]]])  # warm-up: trace/compile once
    items = qids
    if progress:  # one query at a time is minutes for thousands of queries
        from deepseek_tf.console import progress as shown

        items = shown(qids, "answering queries", unit="query", leave=False)
    for q in items:
        t0 = time.perf_counter()
        hits = pipeline.retrieve(ds.queries[q], "dense", top_k)
        latencies[q] = (time.perf_counter() - t0) * 1000
        run[q] = dict(hits)
    return run, _latency_stats(latencies, len(texts), encode_s)


def hybrid_run(dense: tuple[Run, dict], bm25: tuple[Run, dict], top_k: int = 100, rrf_k: int = 60) -> tuple[Run, dict]:
    """Reciprocal-rank fusion of a dense and a BM25 run (the pipeline's hybrid stage over runs already
    retrieved top_k deep, as `search` and `serve` fetch them); per-query latency is both systems' plus fusion."""
    from deepseek_tf.retrieval.pipeline import SearchPipeline

    pipeline = SearchPipeline(hybrid_depth=top_k, rrf_k=rrf_k)
    run, latencies = {}, {}
    (d_run, d_stats), (b_run, b_stats) = dense, bm25
    for q in d_run.keys() | b_run.keys():
        t0 = time.perf_counter()
        hits = pipeline.first_stage("hybrid", top_k, list(d_run.get(q, {}).items()), list(b_run.get(q, {}).items()))
        run[q] = dict(hits)
        latencies[q] = (
            (time.perf_counter() - t0) * 1000 + d_stats["latency_ms"].get(q, 0.0) + b_stats["latency_ms"].get(q, 0.0)
        )
    stats = _latency_stats(latencies, 0, 1.0)
    index_s = d_stats["index_s"] + b_stats["index_s"]  # both indexes must be built
    stats["docs_per_s"], stats["index_s"] = d_stats["docs_per_s"] * d_stats["index_s"] / max(index_s, 1e-9), index_s
    stats["rrf_k"] = rrf_k
    return run, stats


def dataset_warnings(ds: BeirDataset) -> list[str]:
    """One line per kind of bad input that was dropped (counted), plus judged queries with no relevant doc."""
    lines = describe_dropped(ds.dropped)
    no_rel = sum(1 for docs in ds.qrels.values() if not any(g > 0 for g in docs.values()))
    if no_rel:
        lines.append(f"{no_rel} judged queries have no relevant document (left out of the means, counted)")
    return lines


def _score(name: str, qrels, run: Run, stats: dict, extra: dict) -> dict:
    means, per_query = trec_metrics(qrels, run)
    for q, ms in stats.pop("latency_ms").items():
        if q in per_query:
            per_query[q]["latency_ms"] = ms
    return {
        **means,
        **stats,
        "peak_rss_mb": peak_rss_mb(),
        **extra,
        "recall_curve": recall_curve(qrels, run),
        "per_query": per_query,
    }


def evaluate(
    model: str | None,
    dataset: str,
    split: str = "test",
    top_k: int = 100,
    batch_size: int = 64,
    baseline: str | None = None,
    ignore_identical_ids: bool = False,
    rrf_k: int = 60,
    bm25_args: dict | None = None,
    verbose: bool = True,
    rerank: str | None = None,
    rerank_fusion: float | Sequence[float] | None = None,
    runs_dir: str | Path | None = None,
    first_run: str | Path | None = None,
    dev: tuple[float, int] | None = None,
    rerank_stage: str | None = None,
    max_queries: int | None = None,
) -> dict[str, dict]:
    """Evaluates MODEL (and BM25 / hybrid with baseline="bm25"); returns {system name: figures}.

    Each system's figures: METRIC_KEYS, queries, latency p50/p95 (ms, per query), docs_per_s
    (indexing), peak_rss_mb (process peak so far; systems run bm25, dense, hybrid in that order),
    recall_curve (mean Recall@1..100), per_query, warnings (bad input that was dropped), vs (the
    paired difference from the first stage, per metric, with its 95% CI and p: add_comparisons).
    runs_dir: also write each system's ranking there as a TREC run file, RUNS_DIR/<system>.trec.
    first_run: a TREC run file scored as system `run` (another first stage: --rerank reranks it).
    rerank_stage: the system whose top-k --rerank reorders ("dense", "hybrid", "bm25" or "run");
    None: the given first stage (--run, else --model's dense, else BM25).
    max_queries: score a sample of this many judged queries (seeded, data.splits.sample_queries).
    dev: (fraction, seed): score only the queries of `split` that training with data.dev_fraction
    = fraction and data.dev_seed = seed holds out (`train.split_dev`), e.g. to pick a fusion weight.
    """
    if baseline not in (None, "bm25"):
        raise UserError(f"--baseline {baseline!r}: only 'bm25' is supported")
    if model is None and baseline is None and first_run is None:
        raise UserError("nothing to evaluate: give --model, --run and/or --baseline bm25")
    if model is not None and first_run is not None:
        raise UserError("give one first stage: --model or --run, not both")
    if rerank is not None:
        from deepseek_tf.retrieval.rerank import check_reranker_spec

        check_reranker_spec(rerank, rerank_fusion)
    if rerank_stage is not None:
        # stage -> (whether this call produces it, the options that do)
        stages = {
            "dense": (model, "--model"),
            "hybrid": (model and baseline, "--model and --baseline bm25"),
            "bm25": (baseline, "--baseline bm25"),
            "run": (first_run, "--run"),
        }
        if rerank_stage not in stages:
            raise UserError(f"--rerank-stage must be one of {', '.join(stages)}, got {rerank_stage!r}")
        produced, options = stages[rerank_stage]
        if rerank is None or not produced:
            raise UserError(f"--rerank-stage {rerank_stage} needs --rerank and {options}; nothing evaluated")
    if dev is not None and not 0.0 < dev[0] < 1.0:
        raise UserError(f"--dev-fraction must be in (0, 1), got {dev[0]:g}")
    if runs_dir is not None:
        check_run_files(runs_dir, system_names(model, baseline, first_run, rerank, rerank_fusion, rerank_stage))
    ds = load_beir(dataset, split, unknown_ids="drop")
    if dev is not None:
        from deepseek_tf.data.splits import split_dev

        ds = split_dev(ds, *dev)[1]
    if max_queries is not None:
        from deepseek_tf.data.splits import sample_queries

        ds = sample_queries(ds, max_queries, 0)
    warnings = dataset_warnings(ds)
    if verbose:
        for line in warnings:
            print(f"warning: {dataset}: {line}", file=sys.stderr)
    if not ds.qrels:
        raise UserError(f"{dataset}: no judged queries left in split {split!r} after dropping bad input")
    if verbose and warnings:
        print(f"{len(warnings)} warning(s); evaluating the remaining {len(ds.qrels)} queries", file=sys.stderr)
    common = {"warnings": warnings, "ignore_identical_ids": ignore_identical_ids}
    results: dict[str, dict] = {}
    runs: dict[str, Run] = {}

    def score(name: str, run: Run, stats: dict, extra: dict) -> dict:
        runs[name] = drop_identical_ids(run) if ignore_identical_ids else run
        return _score(name, ds.qrels, runs[name], stats, {**common, **extra})

    bm25 = None
    stages = {}  # name -> (run, stats) of each system --rerank may reorder
    if baseline == "bm25":  # first, so its peak RSS is not the dense model's
        from deepseek_tf.retrieval.bm25 import bm25_run

        bm25 = bm25_run(ds, top_k, **(bm25_args or {}))
        bm25_config = bm25[1].pop("bm25")
        results["bm25"] = score("bm25", bm25[0], dict(bm25[1]), {"bm25": bm25_config})
        stages["bm25"] = bm25
    if model is not None:
        from deepseek_tf.retrieval.artifacts import load_embedder

        embedder = load_embedder(model)
        dense = dense_run(embedder, ds, top_k, batch_size, progress=verbose)
        results = {"dense": score("dense", dense[0], dict(dense[1]), {"model": model}), **results}
        stages["dense"] = dense
        if bm25 is not None:
            hybrid = hybrid_run(dense, bm25, top_k, rrf_k)
            results["hybrid"] = score("hybrid", hybrid[0], dict(hybrid[1]), {"model": model})
            stages["hybrid"] = hybrid
    if first_run is not None:  # another system's results: no latency or indexing figures to report
        given = (load_run(first_run, ds, top_k), {"latency_ms": {}})
        results = {"run": score("run", given[0], dict(given[1]), {"run": str(first_run)}), **results}
        stages["run"] = given
    if rerank is not None:  # cross-encoder over the first stage's top-k (BM25's when it is the only one)
        from deepseek_tf.retrieval.rerank import rerank_system

        name = first_stage_name(model, first_run, rerank_stage)
        first_stage, first_stats = stages[name]
        # a query with no document judged relevant is left out of every mean: not worth its pairs
        first_stage = {q: r for q, r in first_stage.items() if max(ds.qrels.get(q, {}).values(), default=0) >= 1}
        for suffix, run, stats in rerank_system(
            rerank, ds, first_stage, first_stats, top_k, rerank_fusion, progress=verbose
        ):
            results[name + suffix] = score(name + suffix, run, stats, {"model": model, "reranker": rerank})
    add_comparisons(results)
    if runs_dir is not None:
        check_run_files(runs_dir, list(runs))  # again: minutes have passed, and these are the names scored
        Path(runs_dir).mkdir(parents=True, exist_ok=True)
        for name, run in runs.items():
            write_run(run, Path(runs_dir) / f"{name}.trec", tag=name)
    return results


def format_table(results: dict[str, dict]) -> str:
    cols = list(METRIC_KEYS) + ["queries"] + list(COST_KEYS)
    lines = ["| system | " + " | ".join(cols) + " |", "|---" * (len(cols) + 1) + "|"]
    for name, r in results.items():
        cells = [
            f"{r[c]:.4f}"
            if c in METRIC_KEYS
            else (f"{r[c]}" if c == "queries" else (f"{r[c]:.1f}" if r.get(c) is not None else "-"))
            for c in cols
        ]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def plot_recall_curves(results: dict[str, dict], path: str | Path, title: str = "") -> None:
    """PNG of mean Recall@k (k = 1..100) for every system, written atomically."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=120)
    for name, r in results.items():
        curve = r["recall_curve"]
        ax.plot(
            range(1, len(curve) + 1),
            curve,
            label=f"{name} (R@10 {r['recall@10']:.3f}, R@100 {r['recall@100']:.3f})",
            linewidth=2,
        )
    ax.set_xscale("log")
    ax.set_xticks([1, 2, 5, 10, 20, 50, 100], labels=["1", "2", "5", "10", "20", "50", "100"])
    ax.set_xlim(1, CURVE_MAX_K)
    ax.set_ylim(0, 1)
    ax.set_xlabel("k (documents retrieved)")
    ax.set_ylabel("mean Recall@k (trec_eval)")
    ax.set_title(title or "Recall@k")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(loc="lower right")
    fig.tight_layout()
    atomic_write(Path(path), lambda tmp: fig.savefig(tmp, format="png", metadata={"Software": PLOT_SOFTWARE}))
    plt.close(fig)


PLOT_SOFTWARE = "deepseek_tf evaluate"  # a plot's PNG Software text: names the plots this command wrote


def written_by_evaluate(path: Path, kind: str) -> bool:
    """Whether PATH is a file `evaluate` wrote as KIND ("report": an --output JSON whose every
    system holds figures; "plot": a --plot PNG that says PLOT_SOFTWARE), so that it may be replaced."""
    if not path.is_file() or path.is_symlink():
        return False
    if kind == "plot":
        from PIL import Image  # matplotlib's own dependency

        try:
            with Image.open(path) as image:
                return image.format == "PNG" and image.info.get("Software") == PLOT_SOFTWARE
        except (OSError, ValueError):
            return False
    try:
        report = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return (
        isinstance(report, dict)
        and bool(report)
        and all(isinstance(r, dict) and "ndcg@10" in r for r in report.values())
    )
