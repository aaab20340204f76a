"""`deepseek-tf index`: build a sharded, resumable index of a corpus (locally or as a Beam pipeline)."""

from __future__ import annotations

import argparse

from deepseek_tf.console import command_parser, number
from deepseek_tf.data.beir import MAX_LINE_BYTES
from deepseek_tf.errors import UserError, cli_entry
from deepseek_tf.index.dense import BACKENDS, PARAMS
from deepseek_tf.retrieval.engines import add_engine_argument, configure
from deepseek_tf.text.analyzer import ANALYZERS

RUNNERS = ("DirectRunner", "DataflowRunner", "FlinkRunner", "SparkRunner", "PortableRunner")


def parse_args(argv: list[str]) -> tuple[argparse.Namespace, list[str]]:
    """(our arguments, Beam pipeline options: whatever follows a bare `--`)."""
    argv = list(argv)
    beam_args = argv[argv.index("--") + 1 :] if "--" in argv else []
    ours = argv[: argv.index("--")] if "--" in argv else argv
    params = "; ".join(f"{b}: {', '.join(PARAMS[b])}" for b in BACKENDS if PARAMS[b])
    p = command_parser(
        "index",
        "Build a sharded, resumable index of a corpus: embedding shards with checksums, a dense "
        "backend (exact or faiss ANN), BM25 with its analyzer, the document texts, and a manifest written "
        "last. Run the same command again after a crash to resume from the last finished shard.",
        [
            "deepseek-tf index --model all-MiniLM-L6-v2 --corpus ../shared/data/cranfield/corpus.jsonl --output runs/idx",  # noqa: E501 (a command to copy whole)
            "deepseek-tf index --model runs/cranfield_minilm/model --corpus docs.csv --output runs/idx "
            "--backend faiss-hnsw --param ef_search=256",
            "deepseek-tf index --model multilingual-e5-small --corpus products.jsonl --output runs/shop "
            "--filterable brand,category,price,in_stock",
            "deepseek-tf index --update runs/shop --corpus new_products.jsonl",
            "deepseek-tf index --compact runs/shop",
            "deepseek-tf index --model export/saved_model --corpus corpus.jsonl --output /mnt/shared/idx "
            "--runner DataflowRunner -- --project P --region us-central1 --temp_location gs://B/tmp",
        ],
    )
    p.add_argument("--model", help="trained model/ dir, SavedModel dir, .tflite file or preset name")
    p.add_argument(
        "--corpus",
        help="BEIR corpus.jsonl, CSV/TSV with id,text[,title] columns, or .txt (one document per line)",
    )
    p.add_argument("--output", help="index directory (created; a rerun resumes or checks it)")
    p.add_argument(
        "--update",
        metavar="DIR",
        help="upsert --corpus's documents into the built index DIR (encoded with its model, searchable and "
        "durable at once; a server serving DIR loads them on SIGHUP)",
    )
    p.add_argument(
        "--compact",
        metavar="DIR",
        help="fold DIR's upserts and deletes into a new base index (swapped in atomically)",
    )
    p.add_argument("--backend", default="exact", help=f"dense search: {', '.join(BACKENDS)} (default: exact)")
    p.add_argument(
        "--param", action="append", default=[], metavar="NAME=VALUE", help=f"backend parameter, repeatable ({params})"
    )
    p.add_argument(
        "--analyzer", default="default", help=f"BM25 analyzer: {', '.join(ANALYZERS)} (default: decided on the corpus)"
    )
    p.add_argument(
        "--fields",
        metavar="A,B,...",
        help="stored fields that search results return: title, text and any other JSONL key or CSV column "
        "(default: all of them; '' for none)",
    )
    p.add_argument(
        "--filterable",
        metavar="A,B,...",
        default="",
        help="stored fields that requests may filter on (strings, numbers or true/false; the type of each is "
        "inferred and recorded), e.g. --filterable brand,category,price,in_stock",
    )
    p.add_argument("--shard-size", type=number(int, 1), default=10000, help="documents per shard (default: 10000)")
    p.add_argument("--batch-size", type=number(int, 1), default=64, help="texts encoded at once (default: 64)")
    p.add_argument(
        "--max-line-mb",
        type=number(float, 0, low_open=True),
        default=MAX_LINE_BYTES / 2**20,
        help=f"refuse a corpus line (one document) longer than this, naming file:line: the corpus is "
        f"streamed and one huge line would be held whole (default: {MAX_LINE_BYTES / 2**20:g})",
    )
    p.add_argument(
        "--runner",
        help=f"encode as an Apache Beam pipeline on this runner ({', '.join(RUNNERS)}); "
        "Beam pipeline options go after `--`: Dataflow --project --region "
        "--temp_location --sdk_container_image (or --setup_file) --max_num_workers; "
        "Flink --flink_master --environment_type --parallelism; Spark "
        "--spark_master_url --environment_type; DirectRunner --direct_num_workers",
    )
    p.add_argument("--quiet", action="store_true", help="no progress or summary on stderr")
    add_engine_argument(p)
    args = p.parse_args(ours)
    if args.update and args.compact:
        raise UserError("--update and --compact: one at a time")
    if args.compact and (args.corpus or args.model or args.output):
        raise UserError("--compact DIR takes no --model, --corpus or --output")
    if args.update and (args.model or args.output or not args.corpus):
        raise UserError("--update DIR needs --corpus NEW (and no --model or --output: the index's model encodes)")
    if not (args.update or args.compact):
        missing = [
            f for f, v in (("--model", args.model), ("--corpus", args.corpus), ("--output", args.output)) if not v
        ]
        if missing:
            p.error(f"the following arguments are required: {', '.join(missing)}")
    if beam_args and not args.runner:
        raise UserError("options after `--` are Beam pipeline options: add --runner")
    return args, beam_args


def parse_params(pairs: list[str]) -> dict[str, int]:
    out = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep or not name:
            raise UserError(f"--param {pair!r}: expected NAME=VALUE")
        try:
            out[name.strip()] = int(value)
        except ValueError:
            raise UserError(f"--param {pair!r}: the value must be an integer") from None
    return out


@cli_entry
def main(argv: list[str] | None = None) -> int:
    import sys

    args, beam_args = parse_args(sys.argv[1:] if argv is None else argv)
    configure(engine=args.engine)
    if args.update or args.compact:
        from deepseek_tf.index.compact import compact_index, update_index

        if args.update:
            update_index(args.update, args.corpus, args.batch_size, verbose=not args.quiet)
        else:
            compact_index(args.compact, verbose=not args.quiet)
        return 0
    params = parse_params(args.param)
    common = dict(
        model=args.model,
        corpus=args.corpus,
        output=args.output,
        backend=args.backend,
        analyzer=args.analyzer,
        shard_size=args.shard_size,
        batch_size=args.batch_size,
        verbose=not args.quiet,
        max_line_bytes=max(1, int(args.max_line_mb * 2**20)),
        fields=None if args.fields is None else [f for f in args.fields.split(",") if f.strip()],
        filterable=[f for f in args.filterable.split(",") if f.strip()],
        **params,
    )
    if args.runner:
        if args.runner not in RUNNERS:
            raise UserError(f"--runner {args.runner!r} is not one of {', '.join(RUNNERS)}")
        from deepseek_tf.index.beam import build_index_beam

        build_index_beam(runner=args.runner, pipeline_args=beam_args, **common)
    else:
        from deepseek_tf.index.build import build_index

        build_index(**common)
    return 0
