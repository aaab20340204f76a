"""`deepseek-tf search` (`python -m deepseek_tf.search`) and `deepseek-tf mine`."""

from __future__ import annotations

import argparse
import json

from deepseek_tf.console import command_parser
from deepseek_tf.data import load_beir
from deepseek_tf.errors import UserError, cli_entry
from deepseek_tf.retrieval.mining import check_output_file, mine, write_pairs
from deepseek_tf.retrieval.search import INDEX_TYPES, format_results, search
from deepseek_tf.text.analyzer import ANALYZERS


def search_parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = command_parser(
        "search",
        "Answer queries over a corpus with a retriever (exact or faiss index).",
        [
            'deepseek-tf search --model all-MiniLM-L6-v2 --corpus ../shared/data/cranfield/corpus.jsonl --query "boundary layer transition"',  # noqa: E501 (a command to copy whole)
            'deepseek-tf search --model runs/cranfield_minilm/model --corpus docs.jsonl --index runs/index --query "summer dress" --top-k 5',  # noqa: E501 (a command to copy whole)
        ],
    )
    p.add_argument("--model", required=True, help="trained model/ dir, SavedModel dir, .tflite file or preset name")
    p.add_argument("--corpus", required=True, help="corpus.jsonl (_id, title, text) or .txt (one document per line)")
    p.add_argument("--index", help="index directory: built and saved on first use, reused afterwards")
    p.add_argument(
        "--index-type",
        choices=INDEX_TYPES,
        help="exact (TensorFlow, default for a new index) or a faiss index: flat, ivf, hnsw",
    )
    p.add_argument("--rebuild", action="store_true", help="rebuild --index even if one is there")
    p.add_argument("--query", action="append", required=True, help="query text (repeat for several)")
    p.add_argument("--top-k", type=int, default=10, help="results per query (default: 10)")
    p.add_argument(
        "--rerank",
        metavar="MODEL",
        help="cross-encoder (trained model/ dir, its SavedModel or .tflite) "
        "that rescores the retriever's top --rerank-depth",
    )
    p.add_argument("--rerank-depth", type=int, default=100, help="candidates reranked per query (default: 100)")
    p.add_argument(
        "--rerank-fusion",
        type=float,
        metavar="W",
        help="order by W·z(cross-encoder) + "
        "(1−W)·z(retriever), z standardised over the candidates "
        "(0.3 on Cranfield, picked on held-out queries: docs/results.md); "
        "default: the cross-encoder alone",
    )
    p.add_argument("--json", action="store_true", help="print the results as JSON")
    return p.parse_args(argv)


@cli_entry
def search_main(argv: list[str] | None = None) -> int:
    args = search_parse_args(argv)
    if args.top_k < 1:
        raise UserError("--top-k must be >= 1")
    results = search(
        args.model,
        args.corpus,
        args.query,
        args.top_k,
        args.index,
        args.index_type,
        args.rebuild,
        rerank=args.rerank,
        rerank_depth=args.rerank_depth,
        fusion=args.rerank_fusion,
    )
    print(json.dumps(results, indent=2, ensure_ascii=False) if args.json else format_results(results))
    return 0


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
    p.add_argument("--top-k", type=int, default=30, help="candidates per query (default: 30)")
    p.add_argument("--skip-top", type=int, default=3, help="best ranks never taken (default: 3)")
    p.add_argument(
        "--margin",
        type=float,
        default=0.05,
        help="negative score <= positive score - margin*|positive score| (default: 0.05)",
    )
    p.add_argument("--min-label", type=int, default=1, help="grade from which a judgment is relevant")
    p.add_argument("--seed", type=int, default=42)
    p.add_argument(
        "--analyzer",
        default="default",
        choices=ANALYZERS,
        help="BM25 terms (default: decided on the corpus, cjk for Chinese, mixed otherwise)",
    )
    p.add_argument(
        "--judged",
        type=int,
        default=0,
        help="negatives per pair taken first from the query's judged non-relevant documents (default: 0)",
    )
    p.add_argument("--output", required=True, help="pairs TSV to write")
    return p.parse_args(argv)


@cli_entry
def mine_main(argv: list[str] | None = None) -> int:
    args = mine_parse_args(argv)
    if args.top_k < 1 or args.skip_top < 0:
        raise UserError("--top-k must be >= 1 and --skip-top >= 0")
    check_output_file(args.output)
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
