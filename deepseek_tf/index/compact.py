"""`deepseek-tf index --update DIR --corpus NEW` (write a corpus's documents into an index's update
log) and `deepseek-tf index --compact DIR` (fold the log into a new base index).

Compaction writes the new index beside DIR (`DIR.compact.tmp`: the base rows still live, then the
written documents, as shards; BM25, the dense backend and the filter columns built over them) and
swaps the two directories in one atomic rename (Linux `renameat2(RENAME_EXCHANGE)`), holding the
index's writer lock throughout: a write waits for it or is refused, never lost. A server that
serves DIR keeps answering from what it loaded; SIGHUP (or /admin/reload) loads the new base.
"""

from __future__ import annotations

import ctypes
import os
import shutil
import time
from pathlib import Path

import numpy as np

from deepseek_tf.data import describe_dropped
from deepseek_tf.data.beir import Dropped
from deepseek_tf.errors import UserError
from deepseek_tf.files import write_json
from deepseek_tf.index.corpus import chunked, iter_records
from deepseek_tf.index.doc_images import doc_images, read_selection, scan_images
from deepseek_tf.index.finish import MANIFEST, finish, stderr_sayer
from deepseek_tf.index.live import LiveIndex
from deepseek_tf.index.shards import SHARD_DIR, read_rows, write_docs, write_vectors
from deepseek_tf.index.updates import write_lock

RENAME_EXCHANGE = 2  # linux/fs.h


def update_index(path: str | Path, corpus: str | Path, batch_size: int = 64, verbose: bool = True) -> dict:
    """Upserts every document of CORPUS into the index at PATH (encoded with its model, `batch_size`
    at a time, with each record's image vector or file when the model reads one) as one log entry;
    {"upserted": n, "seq": its log position, "documents": count}. Every record is checked and
    encoded before that one write: a bad one (a filter field's type, an image that does not
    decode) changes nothing. The encoded documents are held until then, as the index's delta
    holds them once written."""
    say = stderr_sayer(verbose)
    index = LiveIndex.open(path)
    images = doc_images(index.embedder(), corpus)
    if images is not None:
        warning = scan_images(corpus, images)
        if warning:  # one line for the whole update, not one per chunk
            say(f"warning: {corpus}: {warning}")
    dropped = Dropped()
    upsert: list[dict] = []
    started = time.perf_counter()
    records = iter_records(corpus, dropped, fields=read_selection(index.stored_selection, images))
    for chunk in chunked(records, max(batch_size, 1)):
        upsert += index.encode_rows(chunk, batch_size, images)[0]
        say(f"{len(upsert)} documents encoded ({len(upsert) / max(time.perf_counter() - started, 1e-9):.0f}/s)")
    for line in describe_dropped(dropped):
        say(f"warning: {corpus}: {line}")
    if not upsert:
        raise UserError(f"{corpus}: no documents")
    index.commit_upserts(upsert)
    done = len(upsert)
    say(f"{path}: {done} documents upserted (log position {index.seq}); a server serving it loads them on SIGHUP")
    return {"upserted": done, "seq": index.seq, "documents": index.count}


def _exchange(a: Path, b: Path) -> None:
    """Swaps directories A and B in one rename where the kernel can; else two renames (a crash
    between them leaves the old index at B, the new one at A.compact.old, and names both)."""
    libc = ctypes.CDLL(None, use_errno=True)
    renameat2 = getattr(libc, "renameat2", None)
    if renameat2 is not None:
        at_fdcwd = -100
        if renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), RENAME_EXCHANGE) == 0:
            return
    spare = a.with_name(a.name + ".compact.old")
    os.rename(a, spare)
    os.rename(b, a)
    os.rename(spare, b)


def compact_index(path: str | Path, verbose: bool = True) -> dict:
    """Folds the update log of the index at PATH into a new base; returns its manifest."""
    path = Path(path)
    say = stderr_sayer(verbose)
    started = time.perf_counter()
    # checked before the lock, whose file would otherwise be left in a directory that is no index
    if not path.is_dir():
        raise UserError(f"--compact {path}: no such directory")
    if not (path / MANIFEST).is_file():
        raise UserError(f"--compact {path}: no {MANIFEST} (not an index, or not finished building); nothing changed")
    with write_lock(path, what="compaction"):
        index = LiveIndex.open(path)
        m, delta = index.manifest, index.delta
        if not delta.docs and not delta.hidden:
            say(f"{path}: no writes since it was built; nothing to compact")
            return m
        tmp = path.with_name(path.name + ".compact.tmp")
        if tmp.exists() and not (tmp / SHARD_DIR).is_dir() and not (tmp / MANIFEST).is_file():
            raise UserError(f"{tmp}: exists and is not a compaction's leftovers; move it, then compact again")
        shutil.rmtree(tmp, ignore_errors=True)  # a killed compaction's half-built index
        settings = {k: m[k] for k in ("model", "model_fingerprint", "corpus_sha256", "shard_size")}
        settings["stored_fields"] = m.get("stored_fields", "all")
        shard, row = 0, 0
        for i, entry in enumerate(m["shards"]):
            rows = read_rows(path, i)
            keep = np.array([r + row not in delta.hidden for r in range(len(rows))], bool)
            row += len(rows)
            if keep.any():
                vectors = np.load(path / entry["file"])[keep]
                write_docs(tmp, shard, [tuple(r) for r, k in zip(rows, keep) if k])
                write_vectors(tmp, shard, vectors, settings)
                shard += 1
        order = range(len(delta.ids))
        for part in chunked(order, int(m["shard_size"])):
            write_docs(tmp, shard, [(delta.ids[j], *delta.docs[delta.ids[j]][:2]) for j in part])
            write_vectors(tmp, shard, delta.vectors[list(part)], settings)
            shard += 1
        if shard == 0:
            raise UserError(f"{path}: every document is deleted; an index needs at least one")
        changed = f"{len(delta.docs)} written, {len(delta.hidden)} replaced or deleted"
        say(f"compacting {path}: {index.count} documents ({changed})")
        manifest = finish(
            tmp,
            settings,
            shard,
            index.embedder(),
            m["backend"],
            m.get("analyzer_setting", m["analyzer"]),
            {k: v for k, v in m["backend_params"].items() if v is not None},
            Path(m["corpus"]),
            m.get("dropped", {}),
            started,
            0.0,
            say,
            filterable=tuple(m.get("filters") or {}),
        )
        manifest["update_seq"] = delta.seq  # the log starts empty; its numbers go on from here
        write_json(tmp / MANIFEST, manifest)
        _exchange(path, tmp)
        shutil.rmtree(tmp, ignore_errors=True)  # the old index, now at the temporary name
    say(f"{path}: compacted in {time.perf_counter() - started:.1f} s; serve it again (SIGHUP) to load it")
    return manifest
