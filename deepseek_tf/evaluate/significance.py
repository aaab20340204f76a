"""How sure a difference between two rankings is: paired tests over the queries both scored.

`python -m deepseek_tf.evaluate` compares every system with the first stage it builds on
(`add_comparisons`); `--compare BASE.json[:SYSTEM] OTHER.json[:SYSTEM]` compares two saved
reports, e.g. two trained models evaluated separately (`compare_reports`).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from deepseek_tf.errors import UserError

METRIC_KEYS = ("ndcg@10", "mrr@10", "recall@10", "recall@100", "p@10", "map")


def paired_comparison(base: dict[str, float], other: dict[str, float], samples: int = 10_000, seed: int = 0) -> dict:
    """How sure a difference between two systems is, over the queries both scored.

    delta = mean_q (other_q − base_q); ci95 = the 2.5th and 97.5th percentiles of delta over
    `samples` bootstrap resamples of the queries (paired percentile bootstrap); p = two-sided
    paired randomization (sign-flip, permutation) test: the share of the 2^n sign assignments
    of the per-query differences whose |mean| reaches |delta| (exact for n <= 16 queries, else
    `samples` random assignments, counting the observed one, as Smucker et al. 2007 recommend
    for IR). A p near 1 says the two systems cannot be told apart on these queries.
    """
    queries = sorted(base.keys() & other.keys())
    d = np.array([other[q] - base[q] for q in queries], np.float64)  # (n,)
    if len(d) == 0:
        return {"delta": 0.0, "ci95": [0.0, 0.0], "p": 1.0, "queries": 0}
    rng = np.random.default_rng(seed)
    boot = d[rng.integers(0, len(d), size=(samples, len(d)))].mean(1)  # (samples,)
    observed = abs(d.mean()) - 1e-12  # ties count as reaching it
    if len(d) <= 16:
        signs = 1 - 2 * ((np.arange(2 ** len(d))[:, None] >> np.arange(len(d))) & 1)  # (2^n, n)
        p = float(np.mean(np.abs((signs * d).mean(1)) >= observed))
    else:
        signs = rng.choice([-1.0, 1.0], size=(samples, len(d)))
        p = float((np.sum(np.abs((signs * d).mean(1)) >= observed) + 1) / (samples + 1))
    return {
        "delta": float(d.mean()),
        "ci95": [float(np.percentile(boot, 2.5)), float(np.percentile(boot, 97.5))],
        "p": p,
        "queries": len(d),
    }


def add_comparisons(results: dict[str, dict], metrics: tuple[str, ...] = METRIC_KEYS) -> None:
    """Adds results[name]["vs"]: each system against the first stage it builds on (a reranked
    `X+rerank...` row against X; otherwise `dense` when there is one, else a given `run`, else
    `bm25`; `dense` and `run` themselves against `bm25`), per metric (`paired_comparison`); and
    results[name]["vs_bm25"] where that first stage is not BM25 itself, so every system's gain over
    the baseline users already have is in the report with its CI."""
    ref = next((n for n in ("dense", "run") if n in results), "bm25")
    for name, r in results.items():
        stage = name.split("+rerank", 1)[0] if "+rerank" in name else None
        base = stage or {"bm25": None, "dense": "bm25", "run": "bm25"}.get(name, ref)
        if base in results:
            r["vs"] = {"system": base, **compare_reports(results[base], r, metrics)}
        if name != "bm25" and base != "bm25" and "bm25" in results:
            r["vs_bm25"] = {"system": "bm25", **compare_reports(results["bm25"], r, metrics)}


def load_report_system(spec: str) -> tuple[str, dict]:
    """REPORT.json[:SYSTEM] (an `evaluate --output` file; default system: its first) -> (label, figures)."""
    path, _, system = spec.partition(":") if not Path(spec).is_file() else (spec, "", "")
    try:
        report = json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise UserError(f"--compare {spec}: no such file") from None
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise UserError(f"--compare {spec}: not a JSON report (python -m deepseek_tf.evaluate --output)") from None
    if not isinstance(report, dict) or not report:
        raise UserError(f"--compare {spec}: not an evaluate report")
    system = system or next(iter(report))
    if system not in report:
        raise UserError(f"--compare {spec}: no system {system!r} (it has {', '.join(report)})")
    if "per_query" not in report[system]:
        raise UserError(f"--compare {spec}: system {system!r} has no per_query figures")
    return f"{path}:{system}", report[system]


def compare_reports(base: dict, other: dict, metrics: tuple[str, ...] = METRIC_KEYS) -> dict[str, dict]:
    """Per metric, `paired_comparison` of two systems' per-query figures (base first): one
    report's systems (`add_comparisons`) or two saved reports (`--compare`)."""
    shared = base["per_query"].keys() & other["per_query"].keys()
    if not shared:
        raise UserError("--compare: the two reports share no query (another dataset or split?)")
    return {
        k: paired_comparison(
            {q: m[k] for q, m in base["per_query"].items()}, {q: m[k] for q, m in other["per_query"].items()}
        )
        for k in metrics
    }


def format_comparisons(results: dict[str, dict], metric: str = "ndcg@10") -> list[str]:
    lines = []
    for name, r in results.items():
        for key in ("vs", "vs_bm25"):
            if key in r:
                lines.append(f"{name} vs {r[key]['system']}: {metric} {_describe(r[key][metric])}")
    return lines


def _describe(c: dict) -> str:
    return (
        f"{c['delta']:+.4f} (95% CI {c['ci95'][0]:+.4f} to {c['ci95'][1]:+.4f}; "
        f"paired randomization p = {c['p']:.4f}; {c['queries']} queries)"
    )
