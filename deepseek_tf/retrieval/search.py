"""Search a corpus: `python -m deepseek_tf.search --model MODEL --corpus FILE [--index DIR] --query TEXT`.

Without --index the corpus is encoded and searched exactly in memory. With --index DIR the
index is built and saved there on first use and reused afterwards; an index built with
another model (fingerprint) or from another corpus file (content hash) is refused.
`--rerank CROSS_ENCODER` rescores the retriever's top `--rerank-depth` (100) with a
cross-encoder (model/ dir, SavedModel or .tflite) and `--rerank-fusion W` orders them by
W·z(cross-encoder) + (1 − W)·z(retriever), as `evaluate --rerank` does.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

from deepseek_tf.errors import UserError

INDEX_TYPES = ("exact", "flat", "ivf", "hnsw")


def read_corpus(path: str | Path) -> tuple[list[str], list[str], dict[str, int]]:
    """(ids, texts, dropped) from a BEIR corpus.jsonl (`_id, title, text`) or a .txt file
    (one document per line, id = line number); duplicate ids and empty texts are dropped and counted."""
    from deepseek_tf.data import join_title, normalize_text
    from deepseek_tf.data import read_corpus as read_jsonl_corpus

    path = Path(path)
    if not path.is_file():
        raise UserError(f"missing corpus file: {path}")
    if path.suffix == ".jsonl":
        corpus, dropped = read_jsonl_corpus(path)
        ids = list(corpus)
        texts = [join_title(corpus[i]) for i in ids]
    else:
        try:
            lines = [normalize_text(line) for line in path.read_text(encoding="utf-8").splitlines()]
        except UnicodeDecodeError as e:
            raise UserError(f"{path}: not UTF-8 (byte {e.start})") from None
        ids = [str(i) for i, line in enumerate(lines, 1) if line]
        texts = [line for line in lines if line]
        dropped = {"empty docs": len(lines) - len(ids)} if len(ids) < len(lines) else {}
    if not ids:
        raise UserError(f"{path}: no documents")
    return ids, texts, dropped


def file_hash(path: str | Path) -> str:
    from deepseek_tf.data.beir import file_sha256

    return file_sha256(path)[:16]


def open_index(
    embedder,
    corpus: str | Path,
    index_dir: str | Path | None = None,
    index_type: str | None = None,
    rebuild: bool = False,
    batch_size: int = 64,
    verbose: bool = True,
):
    """(index, texts by id): reuses INDEX_DIR when it matches the model and corpus, else builds it."""
    from deepseek_tf.retrieval.index import build_index, load_index

    ids, texts, dropped = read_corpus(corpus)
    say = (lambda m: print(m, file=sys.stderr)) if verbose else (lambda m: None)
    from deepseek_tf.data import describe_dropped

    for line in describe_dropped(dropped):
        say(f"warning: {corpus}: {line}")
    corpus_hash = file_hash(corpus)
    if index_dir is not None and (Path(index_dir) / "index.json").is_file() and not rebuild:
        index = load_index(index_dir, embedder.fingerprint)
        if index.meta.get("corpus_sha256") != corpus_hash:
            raise UserError(
                f"{index_dir}: index was built from another corpus than {corpus}; pass --rebuild to rebuild it"
            )
        if index_type is not None and index.kind != index_type:
            raise UserError(f"{index_dir}: index is '{index.kind}', not '{index_type}'; pass --rebuild to rebuild it")
        say(f"reusing {index.kind} index {index_dir} ({len(index.ids)} documents)")
        return index, dict(zip(ids, texts))
    start = time.perf_counter()
    vectors = embedder.encode_docs(texts, batch_size, progress=sys.stderr.isatty())  # (n, dim)
    took = time.perf_counter() - start
    say(f"encoded {len(texts)} documents in {took:.1f} s ({len(texts) / max(took, 1e-9):.1f} docs/s)")
    index = build_index(
        vectors,
        ids,
        index_type or "exact",
        embedder.fingerprint,
        meta={"corpus_sha256": corpus_hash, "corpus": str(corpus)},
    )
    if index_dir is not None:
        index.save(index_dir)
        say(f"saved {index.kind} index to {index_dir}")
    return index, dict(zip(ids, texts))


def search(
    model: str,
    corpus: str | Path,
    queries: list[str],
    top_k: int = 10,
    index_dir: str | None = None,
    index_type: str | None = None,
    rebuild: bool = False,
    verbose: bool = True,
    rerank: str | None = None,
    rerank_depth: int = 100,
    fusion: float | None = None,
) -> list[dict]:
    """[{query, latency_ms, hits: [{id, score, text}]}] for each query, best hit first.

    With `rerank` (a cross-encoder) the retriever's top `rerank_depth` are rescored and the best
    `top_k` of them returned; each hit also carries `retriever_score` and `reranker_score`, `score`
    is what orders them (the reranker's, or the fusion's with `fusion` = W), and `rerank_ms` is
    the reranking part of `latency_ms`.
    """
    from deepseek_tf.retrieval.artifacts import load_embedder
    from deepseek_tf.retrieval.rerank import Reranker, fuse, fusion_weights, rerank_query

    queries = [q.strip() for q in queries]
    if not queries or not all(queries):
        raise UserError("--query must be a non-empty text")
    if rerank is None and fusion is not None:
        raise UserError("--rerank-fusion needs --rerank CROSS_ENCODER")
    if rerank is not None and rerank_depth < top_k:
        raise UserError(f"--rerank-depth ({rerank_depth}) must be >= --top-k ({top_k})")
    fusion_weights(fusion)  # W in [0, 1]
    embedder = load_embedder(model)
    reranker = Reranker.load(rerank) if rerank is not None else None  # refused before any index is built
    index, texts = open_index(embedder, corpus, index_dir, index_type, rebuild, verbose=verbose)
    out = []
    for q in queries:
        t0 = time.perf_counter()
        hits = index.search(embedder.encode_queries([q]), rerank_depth if reranker else top_k)[0]
        if reranker is None:
            out.append(
                {
                    "query": q,
                    "latency_ms": (time.perf_counter() - t0) * 1000,
                    "hits": [{"id": d, "score": s, "text": texts.get(d, "")} for d, s in hits],
                }
            )
            continue
        t1 = time.perf_counter()
        first = dict(hits)
        reranked = rerank_query(reranker, q, hits, [texts.get(d, "") for d, _ in hits])
        order = reranked if fusion is None else fuse({q: first}, {q: reranked}, fusion)[q]
        best = sorted(order.items(), key=lambda x: (-x[1], x[0]))[:top_k]
        done = time.perf_counter()
        out.append(
            {
                "query": q,
                "latency_ms": (done - t0) * 1000,
                "rerank_ms": (done - t1) * 1000,
                "hits": [
                    {
                        "id": d,
                        "score": s,
                        "retriever_score": first[d],
                        "reranker_score": reranked[d],
                        "text": texts.get(d, ""),
                    }
                    for d, s in best
                ],
            }
        )
    return out


def format_results(results: list[dict], width: int = 100) -> str:
    lines = []
    for r in results:
        reranked = f", reranking {r['rerank_ms']:.1f} ms" if "rerank_ms" in r else ""
        lines.append(f"query: {r['query']}  ({r['latency_ms']:.1f} ms{reranked})")
        for rank, h in enumerate(r["hits"], 1):
            text = h["text"] if len(h["text"]) <= width else h["text"][: width - 1] + "…"
            lines.append(f"{rank:3d}. {h['score']:.4f}  {h['id']}  {text}")
    return "\n".join(lines)
