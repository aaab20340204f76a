"""`deepseek-tf search` (`python -m deepseek_tf.search`): top-k documents of a corpus for queries.

The corpus is read as `deepseek-tf index` reads it (`index.corpus`). Without --index it is encoded
and searched exactly in memory. With --index DIR the search goes through the index that
`deepseek-tf index` builds: one already in DIR for the same model and corpus is loaded; a missing or
empty DIR (or one holding an unfinished build) gets one built there first, by the same build;
anything else is refused and left as it is, so a user's own files are never taken for an index.
`--mode dense|bm25|hybrid` picks the retriever (hybrid: dense and BM25 fused by reciprocal
rank). `--rerank CROSS_ENCODER` rescores the retriever's top `--rerank-depth` (100) with a
cross-encoder (model/ dir, SavedModel or .tflite) and `--rerank-fusion W` orders them by
W·z(cross-encoder) + (1 − W)·z(retriever). Queries run through the one query flow
(`retrieval/pipeline.py`) that `serve` and `evaluate` run, so each gets the same ranking.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from deepseek_tf.console import command_parser, number
from deepseek_tf.data import describe_dropped
from deepseek_tf.data.beir import Dropped, file_sha256, normalize_text
from deepseek_tf.errors import UserError, cli_entry
from deepseek_tf.index.build import build_index
from deepseek_tf.index.built import load_built_index
from deepseek_tf.index.corpus import check_corpus, iter_records
from deepseek_tf.index.dense import BACKENDS, check_backend
from deepseek_tf.index.doc_images import doc_images
from deepseek_tf.index.finish import MANIFEST
from deepseek_tf.index.shards import SHARD_DIR
from deepseek_tf.retrieval.pipeline import MODES, SearchPipeline, exact_dense, fusion_weights

OLD_FORMAT = "index.json"  # what `search --index` wrote before it used `deepseek-tf index`'s format


def check_index_dir(path: Path, model: str, corpus: str | Path) -> bool:
    """True when PATH holds a finished index, False when one is to be built there (PATH missing,
    empty, or an unfinished build of ours); a one-line UserError for anything else, before any
    model is loaded and with nothing touched."""
    if path.exists() and not path.is_dir():
        raise UserError(f"--index {path} is a file, not an index directory")
    if (path / MANIFEST).is_file():
        return True
    if not path.is_dir() or not any(path.iterdir()) or (path / SHARD_DIR).is_dir():
        return False
    if (path / OLD_FORMAT).is_file():
        raise UserError(
            f"--index {path} holds an index in the old {OLD_FORMAT} format, which is no longer read; build one "
            f"with `deepseek-tf index --model {model} --corpus {corpus} --output NEW_DIR` and search --index NEW_DIR"
        )
    raise UserError(
        f"--index {path} is a non-empty directory that holds no deepseek_tf index; choose another "
        f"(a missing or empty directory gets one built)"
    )


def check_same_source(manifest: dict, path: Path, embedder, model: str, corpus: str | Path) -> None:
    """Refuses an index built with another model or from another corpus file, naming what differs."""
    differ = []
    if manifest["model_fingerprint"] != embedder.fingerprint:
        differ.append(
            f"model {manifest['model']} (fingerprint {manifest['model_fingerprint']}), "
            f"not --model {model} ({embedder.fingerprint})"
        )
    corpus_sha = file_sha256(corpus)
    if manifest["corpus_sha256"] != corpus_sha:
        differ.append(
            f"corpus {manifest['corpus']} (sha256 {manifest['corpus_sha256'][:16]}), "
            f"not --corpus {corpus} ({corpus_sha[:16]})"
        )
    if differ:
        raise UserError(f"--index {path} was built with {' and '.join(differ)}; choose another --index")


def open_index(
    embedder,
    model: str,
    corpus: str | Path,
    index_dir: str | Path,
    backend: str | None = None,
    rebuild: bool = False,
    verbose: bool = True,
):
    """The BuiltIndex in INDEX_DIR for this model and corpus, built there first when it has none.
    `backend`: the one a new index gets (default exact); an existing index with another one is
    refused, or with `rebuild` given that backend (its encoded shards are reused)."""
    path = Path(index_dir)
    if check_index_dir(path, model, corpus):
        index = load_built_index(path)
        check_same_source(index.manifest, path, embedder, model, corpus)
        have = index.manifest["backend"]
        if backend is None or backend == have:
            if verbose:
                print(f"reusing {have} index {path} ({index.manifest['count']} documents)", file=sys.stderr)
            return index
        if not rebuild:
            raise UserError(
                f"--index {path} was built with the {have} backend, not {backend}; pass --rebuild to rebuild "
                f"its dense backend (the encoded documents are reused)"
            )
    build_index(model, corpus, path, backend or "exact", verbose=verbose)
    return load_built_index(path)


def in_memory(
    embedder, corpus: str | Path, mode: str = "dense", batch_size: int = 64, verbose: bool = True
) -> SearchPipeline:
    """The pipeline over CORPUS held in memory: encoded now and searched exactly (modes dense and
    hybrid), BM25-indexed now (modes bm25 and hybrid); texts by id for a reranker."""
    dropped = Dropped()
    images = doc_images(embedder, corpus)
    rows = list(iter_records(corpus, dropped, fields=() if images is None else (images.field,)))
    docs = [(r[0], r[1]) for r in rows]
    if verbose:
        for line in describe_dropped(dropped):
            print(f"warning: {corpus}: {line}", file=sys.stderr)
    if not docs:
        raise UserError(f"{corpus}: no documents")
    ids, texts = [d for d, _ in docs], dict(docs)
    pipeline = SearchPipeline(text=texts.__getitem__)
    if mode != "dense":
        from deepseek_tf.retrieval.bm25 import BM25Index

        pipeline.bm25 = BM25Index().index(ids, [t for _, t in docs]).search
    if mode == "bm25":
        return pipeline  # no model work for a lexical search
    start = time.perf_counter()
    inputs = None
    if images is not None:  # each document's image, checked; those without one counted in one line
        inputs = images.inputs(rows)
        missing, absent, example = images.missing(rows)
        if verbose and missing + absent:
            print(f"warning: {corpus}: {images.warning(missing, absent, len(rows), example)}", file=sys.stderr)
    progress = verbose and sys.stderr.isatty()
    vectors = embedder.encode_docs([t for _, t in docs], batch_size, progress=progress, images=inputs)
    took = time.perf_counter() - start
    if verbose:
        print(
            f"encoded {len(ids)} documents in {took:.1f} s ({len(ids) / max(took, 1e-9):.1f} docs/s)", file=sys.stderr
        )
    pipeline.encode_queries, pipeline.dense = embedder.encode_queries, exact_dense(vectors, ids)
    return pipeline


def search(
    model: str,
    corpus: str | Path,
    queries: list[str],
    top_k: int = 10,
    index_dir: str | Path | None = None,
    backend: str | None = None,
    rebuild: bool = False,
    verbose: bool = True,
    rerank: str | None = None,
    rerank_depth: int = 100,
    fusion: float | None = None,
    mode: str = "dense",
    hybrid_depth: int = 100,
    rrf_k: int = 60,
    filter: dict | None = None,
) -> list[dict]:
    """[{query, latency_ms, hits: [{id, score, text, fields}]}] for each query, best hit first
    (`fields`: the stored fields, from an --index that keeps them).

    `mode`: dense, bm25 or hybrid (dense and BM25 each `max(top_k, hybrid_depth)` deep, fused by
    reciprocal rank with k = `rrf_k`). With `rerank` (a cross-encoder) the retriever's top
    `rerank_depth` are rescored and the best `top_k` of them returned; each hit also carries
    `retriever_score` and `reranker_score`, `score` is what orders them (the reranker's, or the
    fusion's with `fusion` = W), and `rerank_ms` is the reranking part of `latency_ms`.
    `filter` (an --index built with --filterable; `index.filters`): only the documents it selects.
    """
    from deepseek_tf.retrieval.artifacts import load_embedder
    from deepseek_tf.retrieval.rerank import Reranker

    queries = [q.strip() for q in queries]
    if not queries or not all(normalize_text(q) for q in queries):  # spaces and control characters alone
        raise UserError("--query must be a non-empty text (not only spaces or control characters)")
    if top_k < 1:
        raise UserError("--top-k must be >= 1")
    if mode not in MODES:
        raise UserError(f"--mode {mode!r} is not one of {', '.join(MODES)}")
    if rerank is None and fusion is not None:
        raise UserError("--rerank-fusion needs --rerank CROSS_ENCODER")
    if rerank is not None and rerank_depth < top_k:
        raise UserError(f"--rerank-depth ({rerank_depth}) must be >= --top-k ({top_k})")
    if filter is not None and index_dir is None:
        raise UserError("--filter needs --index DIR (an index built with --filterable)")
    if backend is not None:
        check_backend(backend, {})  # a faiss backend without faiss is refused before any encoding
    fusion_weights(fusion)  # W in [0, 1]
    check_corpus(corpus)
    if index_dir is not None:
        check_index_dir(Path(index_dir), model, corpus)  # refused before a model is loaded
    embedder = load_embedder(model)
    reranker = Reranker.load(rerank) if rerank is not None else None  # refused before any index is built
    mask, stored = None, lambda doc_id: None
    if index_dir is None:
        pipeline = in_memory(embedder, corpus, mode, verbose=verbose)
    else:
        index = open_index(embedder, model, corpus, index_dir, backend, rebuild, verbose)
        pipeline = SearchPipeline.over_index(index, embedder)
        mask = index.filter_mask(filter) if filter else None
        if index.manifest.get("fields"):
            stored = index.fields
    pipeline.reranker, pipeline.rerank_depth = reranker, rerank_depth
    pipeline.hybrid_depth, pipeline.rrf_k = hybrid_depth, rrf_k
    pipeline.check(mode, reranker is not None, fusion)
    out = []
    for q in queries:
        t0 = time.perf_counter()
        hits = pipeline.retrieve(q, mode, pipeline.depth(top_k, reranker is not None), mask)
        t1 = time.perf_counter()
        best = pipeline.finish(q, hits, top_k, reranker is not None, fusion)
        done = time.perf_counter()
        result = {"query": q, "latency_ms": (done - t0) * 1000}
        if reranker is None:
            result["hits"] = [{"id": h.id, "score": h.score, "text": pipeline.text(h.id)} for h in best]
        else:
            result["rerank_ms"] = (done - t1) * 1000
            result["hits"] = [
                {
                    "id": h.id,
                    "score": h.score,
                    "retriever_score": h.retriever_score,
                    "reranker_score": h.reranker_score,
                    "text": pipeline.text(h.id),
                }
                for h in best
            ]
        for hit in result["hits"]:
            if (fields := stored(hit["id"])) is not None:
                hit["fields"] = fields
        out.append(result)
    return out


def format_results(results: list[dict], width: int = 100) -> str:
    lines = []
    for r in results:
        reranked = f", reranking {r['rerank_ms']:.1f} ms" if "rerank_ms" in r else ""
        lines.append(f"query: {r['query']}  ({r['latency_ms']:.1f} ms{reranked})")
        for rank, h in enumerate(r["hits"], 1):
            text = str(h.get("fields", {}).get("title") or h["text"])  # a catalogue's title says what it is
            text = text if len(text) <= width else text[: width - 1] + "…"
            lines.append(f"{rank:3d}. {h['score']:.4f}  {h['id']}  {text}")
    return "\n".join(lines)


def json_object(text: str) -> dict:
    """--filter's value: a JSON object (argparse turns the ValueError into a one-line usage error)."""
    value = json.loads(text)
    if not isinstance(value, dict):
        raise ValueError("not a JSON object")
    return value


json_object.__name__ = "JSON object"  # argparse names the type in its error: "invalid JSON object value"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = command_parser(
        "search",
        "Answer queries over a corpus with a retriever (in memory, or through an index that "
        "`deepseek-tf index` builds).",
        [
            'deepseek-tf search --model all-MiniLM-L6-v2 --corpus ../shared/data/cranfield/corpus.jsonl --query "boundary layer transition"',  # noqa: E501 (a command to copy whole)
            'deepseek-tf search --model runs/cranfield_minilm/model --corpus docs.jsonl --index runs/index --query "summer dress" --top-k 5',  # noqa: E501 (a command to copy whole)
        ],
    )
    p.add_argument("--model", required=True, help="trained model/ dir, SavedModel dir, .tflite file or preset name")
    p.add_argument(
        "--corpus",
        required=True,
        help="BEIR corpus.jsonl, CSV/TSV with id,text[,title] columns, or .txt (one document per line)",
    )
    p.add_argument(
        "--index",
        help="index directory as `deepseek-tf index` builds it: searched when it holds one for this model "
        "and corpus, built first when missing or empty",
    )
    p.add_argument(
        "--backend",
        choices=BACKENDS,
        help="dense backend of a new --index (default: exact); with --rebuild, of an existing one",
    )
    p.add_argument(
        "--rebuild", action="store_true", help="rebuild the dense backend of --index as --backend (documents reused)"
    )
    p.add_argument("--query", action="append", required=True, help="query text (repeat for several)")
    p.add_argument("--top-k", type=number(int, 1), default=10, help="results per query (default: 10)")
    p.add_argument(
        "--mode",
        choices=MODES,
        default="dense",
        help="retriever: dense (the model), bm25, or hybrid (both fused by reciprocal rank); default: dense",
    )
    p.add_argument(
        "--rerank",
        metavar="MODEL",
        help="cross-encoder (trained model/ dir, its SavedModel or .tflite) "
        "that rescores the retriever's top --rerank-depth",
    )
    p.add_argument(
        "--rerank-depth", type=number(int, 1), default=100, help="candidates reranked per query (default: 100)"
    )
    p.add_argument(
        "--rerank-fusion",
        type=number(float, 0, 1),
        metavar="W",
        help="order by W·z(cross-encoder) + "
        "(1−W)·z(retriever), z standardised over the candidates "
        "(0.3 on Cranfield, picked on held-out queries: docs/results.md); "
        "default: the cross-encoder alone",
    )
    p.add_argument(
        "--filter",
        type=json_object,
        metavar="JSON",
        help="only documents this filter selects, from an --index built with --filterable, e.g. "
        '\'{"brand": "apple", "price": {"lt": 3000}}\' (docs/serving.md#filters)',
    )
    p.add_argument("--json", action="store_true", help="print the results as JSON (with stored fields)")
    return p.parse_args(argv)


@cli_entry
def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    results = search(
        args.model,
        args.corpus,
        args.query,
        args.top_k,
        args.index,
        args.backend,
        args.rebuild,
        rerank=args.rerank,
        rerank_depth=args.rerank_depth,
        fusion=args.rerank_fusion,
        mode=args.mode,
        filter=args.filter,
    )
    print(json.dumps(results, indent=2, ensure_ascii=False) if args.json else format_results(results))
    return 0
