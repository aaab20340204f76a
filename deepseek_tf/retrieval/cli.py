"""`deepseek-tf mine` (`deepseek-tf search` is deepseek_tf.index.search: it searches built indexes)."""

from __future__ import annotations

import argparse

from deepseek_tf.console import command_parser, number
from deepseek_tf.errors import UserError, cli_entry
from deepseek_tf.retrieval.engines import add_engine_argument, configure
from deepseek_tf.text.analyzer import ANALYZERS


def mine_parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = command_parser(
        "mine",
        "Mine hard negatives for dual-encoder training pairs.",
        [
            "deepseek-tf mine --dataset ../shared/data/cranfield --output runs/pairs.tsv",
            "deepseek-tf mine --dataset ../shared/data/cranfield --source all-MiniLM-L6-v2 --top-k 100 --output runs/pairs.tsv",  # noqa: E501 (a command to copy whole)
        ],
    )
    p.add_argument("--dataset", required=True, help="BEIR-layout directory")
    p.add_argument("--split", default="train", help="qrels split whose queries are mined (default: train)")
    p.add_argument("--source", default="bm25", help="'bm25' or a MODEL (trained model dir, SavedModel, preset)")
    p.add_argument("--top-k", type=number(int, 1), default=30, help="candidates per query (default: 30)")
    p.add_argument("--skip-top", type=number(int, 0), default=3, help="best ranks never taken (default: 3)")
    p.add_argument(
        "--margin",
        type=number(float, 0),
        default=0.05,
        help="negative score <= positive score - margin*|positive score| (default: 0.05)",
    )
    p.add_argument("--min-label", type=number(int, 0), default=1, help="grade from which a judgment is relevant")
    p.add_argument("--seed", type=number(int, 0), default=42)
    p.add_argument(
        "--analyzer",
        default="default",
        choices=ANALYZERS,
        help="BM25 terms (default: decided on the corpus, cjk for Chinese, mixed otherwise)",
    )
    p.add_argument(
        "--judged",
        type=number(int, 0),
        default=0,
        help="negatives per pair taken first from the query's judged non-relevant documents (default: 0)",
    )
    p.add_argument("--output", required=True, help="pairs TSV to write")
    add_engine_argument(p)
    return p.parse_args(argv)


@cli_entry
def mine_main(argv: list[str] | None = None) -> int:
    args = mine_parse_args(argv)
    configure(engine=args.engine)
    if args.top_k < 1 or args.skip_top < 0:
        raise UserError("--top-k must be >= 1 and --skip-top >= 0")
    from deepseek_tf.data import load_beir
    from deepseek_tf.retrieval.mining import check_mine_output, check_output_file, mine, write_pairs

    check_output_file(args.output)
    check_mine_output(args.output, args.dataset, args.source)
    ds = load_beir(args.dataset, args.split, unknown_ids="drop")
    mined = mine(
        ds,
        args.source,
        args.top_k,
        args.skip_top,
        args.margin,
        args.min_label,
        args.seed,
        judged=args.judged,
        analyzer=args.analyzer,
    )
    write_pairs(mined.pairs, args.output)
    print(f"wrote {len(mined.pairs)} pairs with negatives to {args.output}")
    return 0
