"""After the shards: the text store, BM25, the dense backend, the recall check, and the manifest,
written last (an index directory without `manifest.json` is never loaded)."""

from __future__ import annotations

import resource
import shutil
import sys
import time
from pathlib import Path

import numpy as np

from deepseek_tf.data.beir import file_sha256
from deepseek_tf.errors import UserError
from deepseek_tf.index.dense import FAISS_FILE, DenseSearcher, ShardedVectors, build_dense, resolve_params
from deepseek_tf.index.filters import FILTER_DIR, Columns, infer_type
from deepseek_tf.index.lexical import (
    BM25_DIR,
    IDS_FILE,
    OFFSETS_FILE,
    StoredBM25,
    TextStore,
    resolve_analyzer,
    write_offsets,
)
from deepseek_tf.index.shards import (
    SHARD_DIR,
    atomic_write,
    check_npy_written,
    read_rows,
    save_npy,
    shard_paths,
    verify_shard,
    write_json,
)

FORMAT, VERSION = "deepseek_tf-index", 2  # 2: checksums of the ids, offsets and BM25 files
MANIFEST = "manifest.json"
RECALL_QUERIES = 200


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def model_spec(model: str) -> str:
    """What the manifest names: an existing path made absolute (the service may start elsewhere),
    else the preset name."""
    return str(Path(model).resolve()) if Path(model).exists() else model


def _tree_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in Path(path).rglob("*") if f.is_file())


def ann_recall(
    searcher: DenseSearcher, store: TextStore, embedder, n: int, k: int = 10, queries: int = RECALL_QUERIES
) -> float:
    """Mean recall@k of the backend against exact search, with the query-tower encodings of a
    fixed sample of the corpus's own texts as queries."""
    rows = np.sort(np.random.default_rng(0).choice(n, min(n, queries), replace=False))
    q = embedder.encode_queries([store.get(int(r))[1] for r in rows])  # (queries, dim)
    exact = DenseSearcher("exact", searcher.vectors, Path("."), {})
    _, truth = exact.search(q, k)
    _, found = searcher.search(q, k)
    return float(np.mean([len(set(a) & set(b)) / len(b) for a, b in zip(found, truth)]))


def file_checksums(output: Path, names: list[str]) -> dict[str, dict]:
    """{path relative to OUTPUT: {sha256, bytes}} of the named files and of every file under the
    named directories: what a loader checks before it serves ids, offsets or BM25 postings."""
    files = []
    for name in names:
        p = output / name
        files += sorted(f for f in p.rglob("*") if f.is_file()) if p.is_dir() else [p]
    return {str(f.relative_to(output)): {"sha256": file_sha256(f), "bytes": f.stat().st_size} for f in files}


def finish(
    output: Path,
    settings: dict,
    shards: int,
    embedder,
    backend: str,
    analyzer: str,
    backend_params: dict,
    corpus: Path,
    dropped: dict,
    started: float,
    encode_s: float,
    say=lambda m: None,
    runner: str = "local",
    filterable: tuple[str, ...] = (),
) -> dict:
    """Builds everything after the shards and writes the manifest; returns it."""
    records = [verify_shard(output, i, settings, checksums=False) for i in range(shards)]
    missing = [i for i, r in enumerate(records) if r is None]
    if missing:
        raise UserError(f"{shard_paths(output, missing[0])['vectors']}: shard was never finished; run the build again")
    dims = {r["dim"] for r in records}
    if len(dims) > 1:
        raise UserError(f"{output}: shards hold vectors of different sizes {sorted(dims)}; build into a new --output")
    counts = [r["count"] for r in records]
    n, dim = sum(counts), dims.pop()

    t0 = time.perf_counter()
    ids, offsets = write_offsets(output, counts)
    write_json(output / IDS_FILE, ids)

    atomic_write(output / OFFSETS_FILE, lambda p: save_npy(p, offsets))
    stored, filters = write_filter_columns(output, shards, filterable, n, say)
    resolved = resolve_analyzer(analyzer, output, shards)
    say(f"BM25 over {n} documents with the {resolved.name} analyzer")
    tmp = output / f".{BM25_DIR}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    bm25 = StoredBM25(analyzer=resolved.name).build(output, shards, ids)
    try:
        bm25.save(tmp)
        for npy in tmp.glob("*.npy"):  # bm25s saves with np.save, which ignores a short write
            check_npy_written(npy)
    except (OSError, UserError) as e:  # bm25s names no file when the disk is full or `ulimit -f` is reached
        shutil.rmtree(tmp, ignore_errors=True)
        why = e.strerror if isinstance(e, OSError) and e.strerror else e
        raise UserError(f"{tmp}: cannot write the BM25 index ({why}); nothing of it kept") from None
    shutil.rmtree(output / BM25_DIR, ignore_errors=True)
    tmp.replace(output / BM25_DIR)
    lexical_s = time.perf_counter() - t0

    t0 = time.perf_counter()
    params = resolve_params(backend, backend_params, n, dim)
    vectors = ShardedVectors.open([shard_paths(output, i)["vectors"] for i in range(shards)], in_memory=False)
    if backend != "exact":
        say(f"building {backend} over {n} vectors ({', '.join(f'{k}={v}' for k, v in params.items())})")
    (output / FAISS_FILE).unlink(missing_ok=True)
    build_dense(backend, vectors, output, params)
    dense_s = time.perf_counter() - t0
    searcher = DenseSearcher(backend, vectors, output, params)
    recall = None
    if backend != "exact":
        recall = ann_recall(searcher, TextStore(output, counts, offsets), embedder, n)

    manifest = {
        "format": FORMAT,
        "version": VERSION,
        "model": settings["model"],
        "model_fingerprint": settings["model_fingerprint"],
        "analyzer": resolved.name,
        "bm25_avgdl": bm25.avgdl,
        "analyzer_setting": analyzer,
        "backend": backend,
        "backend_params": params,
        "dim": dim,
        "count": n,
        "shard_size": settings["shard_size"],
        "stored_fields": settings["stored_fields"],
        "shards": [
            {
                "file": f"{SHARD_DIR}/{shard_paths(output, i)['vectors'].name}",
                "docs": f"{SHARD_DIR}/{shard_paths(output, i)['docs'].name}",
                "count": r["count"],
                "sha256": r["sha256"],
                "docs_sha256": r["docs_sha256"],
            }
            for i, r in enumerate(records)
        ],
        "files": {
            "ids": IDS_FILE,
            "offsets": OFFSETS_FILE,
            "bm25": BM25_DIR,
            "dense": FAISS_FILE if backend != "exact" else None,
        },
        "fields": stored,
        "filters": filters,
        # every file but the shards (they carry their own sums above): an edited ids.json would
        # serve other documents under the ids, so the loader verifies these too
        "checksums": file_checksums(
            output,
            [IDS_FILE, OFFSETS_FILE, BM25_DIR]
            + ([FAISS_FILE] if backend != "exact" else [])
            + ([FILTER_DIR] if filters else []),
        ),
        "corpus": str(Path(corpus).resolve()),
        "corpus_sha256": settings["corpus_sha256"],
        "dropped": dict(dropped),
    }
    size = _tree_bytes(output)
    manifest["build"] = {
        "runner": runner,
        "seconds": round(time.perf_counter() - started, 3),
        "encode_seconds": round(encode_s, 3),
        "lexical_seconds": round(lexical_s, 3),
        "dense_seconds": round(dense_s, 3),
        "peak_rss_mb": round(peak_rss_mb(), 1),
        "bytes": size,
        "bytes_per_doc": round(size / n, 1),
        "ann_recall_at_10": recall,
        "ann_recall_queries": min(n, RECALL_QUERIES) if recall is not None else 0,
    }
    write_json(output / MANIFEST, manifest)
    b = manifest["build"]
    say(
        f"indexed {n} documents into {output}: {b['seconds']:.1f} s (encoding {encode_s:.1f} s), "
        f"peak RSS {b['peak_rss_mb']:.0f} MB, {b['bytes_per_doc']:.0f} bytes/doc"
        + (
            f", {backend} recall@10 vs exact {recall:.3f} on {b['ann_recall_queries']} sample queries"
            if recall is not None
            else ""
        )
    )
    return manifest


def write_filter_columns(
    output: Path, shards: int, filterable: tuple[str, ...], n: int, say=lambda m: None
) -> tuple[list[str], dict]:
    """(the stored field names, the manifest's "filters" entry): the columns of the filterable
    fields, their types inferred from every document, written under OUTPUT/filters/."""
    names: dict[str, None] = {}
    rows: list[dict] = []
    ids: list[str] = []
    for i in range(shards):
        for row in read_rows(output, i):
            fields = row[2] if len(row) > 2 else {}
            names.update(dict.fromkeys(fields))
            if filterable:
                rows.append({f: fields.get(f) for f in filterable})
                ids.append(row[0])
    shutil.rmtree(output / FILTER_DIR, ignore_errors=True)
    if not filterable:
        return list(names), {}
    types = {f: infer_type(f, zip(ids, (r[f] for r in rows))) for f in filterable}
    say("filter fields: " + ", ".join(f"{f} ({t})" for f, t in types.items()))
    return list(names), Columns.from_values(types, rows, ids).save(output)


def stderr_sayer(verbose: bool):
    return (lambda m: print(m, file=sys.stderr, flush=True)) if verbose else (lambda m: None)
