"""`python -m deepseek_tf.evaluate` / `deepseek-tf evaluate`: trec_eval metrics for dense, BM25, hybrid and
reranked systems."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from deepseek_tf.config import DataConfig
from deepseek_tf.console import command_parser, number
from deepseek_tf.errors import UserError, cli_entry, refuse_aliasing
from deepseek_tf.evaluate.report import evaluate, format_table, plot_recall_curves, written_by_evaluate
from deepseek_tf.evaluate.significance import compare_reports, format_comparisons
from deepseek_tf.files import write_json
from deepseek_tf.retrieval.engines import add_engine_argument, configure
from deepseek_tf.text.analyzer import ANALYZERS


def _weights(text: str) -> list[float]:
    weight = number(float, 0, 1)
    try:
        return [weight(w) for w in text.split(",")]
    except argparse.ArgumentTypeError:
        raise argparse.ArgumentTypeError(f"expected W or W1,W2,... (numbers in [0, 1]), got {text!r}") from None


def _fraction(text: str) -> float:
    """--dev-fraction: a number strictly between 0 and 1 (what evaluate accepts)."""
    value = number(float, None)(text)
    if not 0.0 < value < 1.0:
        raise argparse.ArgumentTypeError(f"must be in (0, 1), got {text!r}")
    return value


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = command_parser(
        "evaluate",
        "Evaluate a retriever on a BEIR-layout dataset with trec_eval metrics; "
        "optionally against BM25 and a BM25+dense hybrid.",
        [
            "deepseek-tf evaluate --model all-MiniLM-L6-v2 --dataset ../shared/data/cranfield --baseline bm25",
            "deepseek-tf evaluate --model runs/cranfield_minilm/model --dataset ../shared/data/cranfield --rerank runs/cross_encoder_minilm/model --rerank-fusion 0.3",  # noqa: E501 (a command to copy whole)
            "python -m deepseek_tf.evaluate --baseline bm25 --dataset ../shared/data/cranfield --output report.json",
        ],
    )
    p.add_argument(
        "--model",
        help="trained model/ dir, SavedModel dir, .tflite file or preset name (may be left out with --baseline bm25)",
    )
    p.add_argument(
        "--dataset", help="BEIR-layout directory (corpus.jsonl, queries.jsonl, qrels/); required unless --compare"
    )
    p.add_argument(
        "--run",
        metavar="FILE",
        help="a TREC run file (e.g. your production first stage) scored as "
        "system 'run' and, with --rerank, reranked; instead of --model",
    )
    p.add_argument("--split", default="test", help="qrels split (default: test)")
    p.add_argument(
        "--dev-fraction",
        type=_fraction,
        metavar="F",
        help="score only the queries of --split that "
        "training with data.dev_fraction F held out (with --split train: a dev set that both stages "
        "were trained without)",
    )
    p.add_argument(
        "--dev-seed", type=number(int, 0), help=f"data.dev_seed of that training (default: {DataConfig.dev_seed})"
    )
    p.add_argument(
        "--max-queries",
        type=number(int, 1),
        metavar="N",
        help="score a seeded sample of N of the judged queries (e.g. to time a reranker); default: all",
    )
    p.add_argument("--baseline", choices=["bm25"], help="also evaluate BM25 and, with --model, the hybrid (RRF)")
    p.add_argument("--top-k", type=number(int, 1), default=100, help="documents retrieved per query (default: 100)")
    p.add_argument(
        "--rerank",
        metavar="MODEL",
        help="cross-encoder (trained model/ dir or its SavedModel) that "
        "rescores the first stage's top-k: adds a '+rerank' row",
    )
    p.add_argument(
        "--rerank-stage",
        choices=("dense", "hybrid", "bm25", "run"),
        default=None,
        help="which system's top-k --rerank reorders (default: --run, else --model's dense, else bm25); "
        "hybrid needs --model and --baseline bm25",
    )
    p.add_argument(
        "--rerank-fusion",
        type=_weights,
        metavar="W[,W...]",
        help="also a '+rerank+fusion' row "
        "ordered by W·z(cross-encoder) + (1−W)·z(first stage), z standardised per query (0..1); "
        "several weights (e.g. 0.3,0.4,0.5 on a dev split) give one '+rerank+fusion@W' row each "
        "from the same scoring pass",
    )
    p.add_argument("--batch-size", type=number(int, 1), default=64, help="encoding batch size (default: 64)")
    add_engine_argument(p)
    p.add_argument("--rrf-k", type=number(int, 0), default=60, help="reciprocal-rank fusion constant (default: 60)")
    p.add_argument(
        "--analyzer",
        default="default",
        choices=list(ANALYZERS),
        help="lexical analyzer of BM25 and the hybrid: default (decided on the corpus: mixed, or cjk "
        "for mostly-CJK text), mixed (English words stemmed, CJK runs as character 1-2-grams), "
        "cjk (mixed + Latin character 1-2-grams), english, jieba (default: default)",
    )
    p.add_argument("--bm25-k1", type=number(float, 0), default=1.5, help="BM25 k1 (default: 1.5, bm25s's default)")
    p.add_argument("--bm25-b", type=number(float, 0, 1), default=0.75, help="BM25 b (default: 0.75)")
    p.add_argument(
        "--bm25-method",
        default="lucene",
        choices=["lucene", "robertson", "atire", "bm25l", "bm25+"],
        help="BM25 variant (default: lucene)",
    )
    p.add_argument(
        "--ignore-identical-ids",
        action="store_true",
        help="drop a retrieved doc whose id equals the query id (BEIR's convention)",
    )
    p.add_argument(
        "--compare",
        nargs=2,
        metavar=("BASE.json[:SYSTEM]", "OTHER.json[:SYSTEM]"),
        help="compare two saved reports (--output files; default system: each one's first) query by "
        "query: difference, 95%% CI and paired randomization p per metric; evaluates nothing",
    )
    p.add_argument("--output", help="write the report as JSON here")
    p.add_argument(
        "--save-runs",
        metavar="DIR",
        help="write each system's ranking to DIR/<system>.trec (TREC run files: trec_eval, or a reranker's run:PATH)",
    )
    p.add_argument("--plot", help="write Recall@k curves (k=1..100) for every system to this PNG")
    return p.parse_args(argv)


def compare_main(base_spec: str, other_spec: str) -> int:
    from deepseek_tf.evaluate.significance import load_report_system

    (base_name, base), (other_name, other) = load_report_system(base_spec), load_report_system(other_spec)
    print(f"{other_name} vs {base_name}, query by query:")
    print("| metric | base | other | difference | 95% CI | p |\n|---|---|---|---|---|---|")
    for metric, c in compare_reports(base, other).items():
        print(
            f"| {metric} | {base[metric]:.4f} | {other[metric]:.4f} | {c['delta']:+.4f} | "
            f"{c['ci95'][0]:+.4f} to {c['ci95'][1]:+.4f} | {c['p']:.4f} |"
        )
    print(
        f"{c['queries']} queries in both (paired bootstrap CI, 10,000 resamples; two-sided paired randomization test)"
    )
    return 0


@cli_entry
def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    configure(engine=args.engine)
    if args.compare:
        return compare_main(*args.compare)
    if not args.dataset:
        raise UserError("--dataset is required (a BEIR-layout directory), unless --compare")
    for flag in ("output", "plot"):  # checked now, not after the whole evaluation
        target = getattr(args, flag)
        if target and Path(target).is_dir():
            raise UserError(f"--{flag} {target}: a directory, not a file; nothing evaluated")
        if target and not Path(target).resolve().parent.is_dir():
            raise UserError(f"--{flag} {target}: directory {Path(target).parent} does not exist")
    inputs = {
        flag: [Path(v)]
        for flag, v in (("--model", args.model), ("--rerank", args.rerank), ("--run", args.run))
        if v and Path(v).exists()
    }
    dataset = Path(args.dataset)
    inputs["--dataset"] = [f for f in dataset.rglob("*") if f.is_file()] if dataset.is_dir() else [dataset]
    outputs: dict[str, list[Path]] = {}  # written so far: no two outputs may share a path either
    for flag in ("output", "plot", "save_runs"):
        if getattr(args, flag):
            name, target = f"--{flag.replace('_', '-')}", getattr(args, flag)
            refuse_aliasing(name, [target], inputs)
            try:
                refuse_aliasing(name, [target], outputs)
            except UserError as e:
                raise UserError(str(e).replace("overwrite an input", "overwrite another output")) from None
            outputs[name] = [Path(target)]
    for flag, kind in (("output", "report"), ("plot", "plot")):  # after the aliasing checks: they say more
        target = getattr(args, flag)
        if (
            target
            and (Path(target).exists() or Path(target).is_symlink())
            and not written_by_evaluate(Path(target), kind)
        ):
            raise UserError(
                f"--{flag} {target}: exists and is not a {kind} evaluate wrote; nothing evaluated (choose another path)"
            )
    if args.dev_seed is not None and args.dev_fraction is None:
        raise UserError("--dev-seed needs --dev-fraction (the dev split it seeds)")
    seed = DataConfig.dev_seed if args.dev_seed is None else args.dev_seed  # training's default split
    dev = None if args.dev_fraction is None else (args.dev_fraction, seed)
    bm25_args = {"k1": args.bm25_k1, "b": args.bm25_b, "method": args.bm25_method, "analyzer": args.analyzer}
    results = evaluate(
        args.model,
        args.dataset,
        args.split,
        args.top_k,
        args.batch_size,
        args.baseline,
        args.ignore_identical_ids,
        args.rrf_k,
        bm25_args,
        rerank=args.rerank,
        rerank_fusion=args.rerank_fusion,
        runs_dir=args.save_runs,
        first_run=args.run,
        dev=dev,
        rerank_stage=args.rerank_stage,
        max_queries=args.max_queries,
    )
    print(format_table(results))
    for line in format_comparisons(results):
        print(line)
    left_out = max((r.get("queries_without_relevant", 0) for r in results.values()), default=0)
    if left_out:
        print(f"{left_out} judged queries have no document judged relevant and are left out of the means")
    if "bm25" in results:
        c = results["bm25"]["bm25"]
        print(
            f"bm25: bm25s method={c['method']} k1={c['k1']} b={c['b']}, analyzer {c['analyzer_setting']}"
            f"{' -> ' + c['analyzer'] if c['analyzer'] != c['analyzer_setting'] else ''}, title+text"
        )
    for name, r in results.items():
        if "rerank_latency_ms_p50" in r:
            print(
                f"{name}: reranking {r['rerank_depth']} docs/query takes p50 {r['rerank_latency_ms_p50']:.0f} ms, "
                f"p95 {r['rerank_latency_ms_p95']:.0f} ms ({r['rerank_pairs_per_s']:.1f} pairs/s); "
                "the row's latency is first stage + reranking"
            )
    if args.output:
        write_json(Path(args.output), results, indent=2)
    if args.plot:
        plot_recall_curves(results, args.plot, f"{Path(args.dataset).name} ({args.split})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
