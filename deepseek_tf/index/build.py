"""`build_index`: a corpus file -> a sharded, resumable index directory.

    DIR/shards/NNNNN.docs.jsonl, NNNNN.npy, NNNNN.json   one shard (see shards.py)
    DIR/ids.json, DIR/docs.offsets.npy                    row order and the text store's offsets
    DIR/bm25/                                             bm25s's files (analyzer in the manifest)
    DIR/dense.faiss                                       the faiss index (faiss backends only)
    DIR/manifest.json                                     written last

The corpus is streamed: one shard's texts are in memory at a time. A shard's texts are encoded
sorted by length, `batch_size` at a time, so its vectors depend only on its texts and a resumed
build writes the same bytes as an uninterrupted one. A model whose document tower reads image
vectors gets each record's `image_embedding` with its text (`index.doc_images`): every vector is
checked before anything is written, and the vector is not stored unless `--fields` names it.
"""

from __future__ import annotations

import json
import os
import signal
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from deepseek_tf.console import format_eta, is_terminal
from deepseek_tf.data import describe_dropped
from deepseek_tf.data.beir import MAX_LINE_BYTES, Dropped, file_sha256
from deepseek_tf.errors import UserError, refuse_aliasing
from deepseek_tf.index.corpus import check_corpus, chunked, iter_records, scan_corpus
from deepseek_tf.index.dense import check_backend
from deepseek_tf.index.doc_images import DocImages, doc_images, read_selection, scan_images, split_images
from deepseek_tf.index.finish import FORMAT, MANIFEST, finish, model_spec, stderr_sayer
from deepseek_tf.index.shards import SHARD_DIR, remove_stale, verify_shard, write_docs, write_vectors
from deepseek_tf.index.updates import read_log
from deepseek_tf.text.analyzer import ANALYZERS

# Test hook: SIGKILL the build after this many shards were written in this run (a crash at the
# worst moment, reproducibly; tests/test_index.py resumes from it).
KILL_AFTER_ENV = "DEEPSEEK_TF_INDEX_KILL_AFTER_SHARDS"


@dataclass
class Plan:
    """What one build run works with; shared by the local build and the Beam pipeline."""

    model: str
    corpus: Path
    output: Path
    backend: str
    analyzer: str
    shard_size: int
    batch_size: int
    backend_params: dict
    embedder: object
    settings: dict
    say: object
    verbose: bool
    started: float = field(default_factory=time.perf_counter)
    dropped: Dropped = field(default_factory=Dropped)
    max_line_bytes: int = MAX_LINE_BYTES
    records: int = 0  # records in the corpus: the progress total
    fields: tuple[str, ...] | None = None  # stored fields (None: every key or column)
    filterable: tuple[str, ...] = ()  # stored fields that requests may filter on
    images: DocImages | None = None  # what the model's document tower reads beside the text, if anything


def check_args(backend: str, analyzer: str, shard_size: int, batch_size: int, backend_params: dict) -> None:
    check_backend(backend, backend_params)
    if analyzer not in ANALYZERS:
        raise UserError(f"--analyzer {analyzer!r} is not one of {', '.join(ANALYZERS)}")
    if shard_size < 1 or batch_size < 1:
        raise UserError("--shard-size and --batch-size must be >= 1")


def check_output(output: Path) -> None:
    if output.exists() and not output.is_dir():
        raise UserError(f"--output {output} is a file, not a directory")
    if (
        output.is_dir()
        and any(output.iterdir())
        and not (output / MANIFEST).exists()
        and not (output / SHARD_DIR).is_dir()
    ):
        raise UserError(f"--output {output} is a non-empty directory that holds no index; choose another")


def plan_build(
    model: str,
    corpus: str | Path,
    output: str | Path,
    backend: str,
    analyzer: str,
    shard_size: int,
    batch_size: int,
    verbose: bool,
    backend_params: dict,
    max_line_bytes: int = MAX_LINE_BYTES,
    fields: Sequence[str] | None = None,
    filterable: Sequence[str] = (),
) -> Plan:
    """Checks every argument before anything is written, loads the embedder, hashes the corpus;
    for a model that reads image vectors, checks every record's vector and counts those missing."""
    from deepseek_tf.retrieval.artifacts import load_embedder

    check_args(backend, analyzer, shard_size, batch_size, backend_params)
    fields, filterable = check_fields(fields, filterable)
    corpus, output = check_corpus(corpus), Path(output)
    check_output(output)
    records = scan_corpus(corpus, max_line_bytes)  # a bad line is refused now, not after hours of encoding
    # the build writes under OUTPUT: a corpus or model inside it (or OUTPUT inside a model dir) would be overwritten
    refuse_aliasing(
        "--output", [output], {"--corpus": [corpus], **({"--model": [model]} if Path(model).exists() else {})}
    )
    embedder = load_embedder(model)
    say = stderr_sayer(verbose)
    images = doc_images(embedder, corpus)
    if images is not None:
        warning = scan_images(corpus, images, max_line_bytes)  # a bad vector or field stops it now
        if warning:  # one line for the whole build, not one per shard
            say(f"warning: {corpus}: {warning}")
    settings = {
        "model": model_spec(model),
        "model_fingerprint": embedder.fingerprint,
        "corpus_sha256": file_sha256(corpus),
        "shard_size": shard_size,
        "stored_fields": "all" if fields is None else list(fields),
    }
    return Plan(
        model,
        corpus,
        output,
        backend,
        analyzer,
        shard_size,
        batch_size,
        dict(backend_params),
        embedder,
        settings,
        say,
        verbose,
        max_line_bytes=max_line_bytes,
        records=records,
        fields=fields,
        filterable=filterable,
        images=images,
    )


def check_fields(
    fields: Sequence[str] | None, filterable: Sequence[str]
) -> tuple[tuple[str, ...] | None, tuple[str, ...]]:
    """--fields and --filterable as tuples; a filterable field must be stored."""
    fields = None if fields is None else tuple(dict.fromkeys(f.strip() for f in fields if f.strip()))
    filterable = tuple(dict.fromkeys(f.strip() for f in filterable if f.strip()))
    if fields is not None and (missing := [f for f in filterable if f not in fields]):
        raise UserError(f"--filterable {','.join(missing)}: not among --fields {','.join(fields) or '(none)'}")
    if clash := [f for f in filterable if f in ("text", "_id", "id")]:
        raise UserError(f"--filterable {clash[0]}: the document text and id are not filter fields")
    return fields, filterable


# what a finished index was built from, and the flag that chose it
BUILT_FROM = {
    "model_fingerprint": "--model",
    "corpus_sha256": "--corpus",
    "shard_size": "--shard-size",
    "stored_fields": "--fields",
}


def finished_manifest(plan: Plan) -> dict | None:
    """The manifest when OUTPUT already holds this very index (checked file by file), else None.

    A finished index of another model, corpus or shard size is refused before anything is touched:
    none of its shards could be reused, and removing its manifest would stop it serving. With only
    another backend, analyzer or backend parameters the shards are reused and the manifest removed,
    as the build is about to change what it describes; unless the index took writes since it was
    built (`refuse_written`), then it is refused too."""
    path = plan.output / MANIFEST
    if not path.is_file():
        return None
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except ValueError:  # derived from the shards: a damaged one is simply written again
        path.unlink()
        return None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise UserError(f"{path}: not a deepseek_tf index manifest; choose another --output")
    for key, flag in BUILT_FROM.items():
        if manifest.get(key) != plan.settings[key]:
            raise UserError(
                f"--output {plan.output} holds a finished index built with another {flag} ({key} "
                f"{manifest.get(key)} != {plan.settings[key]}); nothing changed: build into another --output"
            )
    same = (
        manifest.get("backend") == plan.backend
        and manifest.get("analyzer_setting") == plan.analyzer
        and list(manifest.get("filters", {})) == list(plan.filterable)
        and all(manifest.get("backend_params", {}).get(k) == int(v) for k, v in plan.backend_params.items())
    )
    if same:
        from deepseek_tf.index.built import load_built_index

        return load_built_index(plan.output).manifest  # refuses a damaged one
    refuse_written(plan.output, manifest, plan.corpus)
    path.unlink()
    return None


def refuse_written(output: Path, manifest: dict, corpus: Path) -> None:
    """Refuses to rebuild an index that took writes (`index --update`, a server's, or a compaction
    of them): its documents are no longer the corpus's, and the shards a rebuild reads are."""
    if manifest.get("update_seq") or read_log(output)[0]:
        raise UserError(
            f"--output {output}: holds writes made since it was built from {corpus} (index --update or a "
            "server's, compacted or not), which a rebuild from the corpus would lose; nothing changed: "
            "build into a new --output"
        )


def shard_stream(plan: Plan):
    """(shard number, docs, record or None) over the corpus, shard by shard; verified shards come
    with their record and are not to be encoded again. For a model that reads images the docs'
    fields hold each record's image vector too (`shard_images` takes it out)."""
    records = iter_records(plan.corpus, plan.dropped, plan.max_line_bytes, read_selection(plan.fields, plan.images))
    for i, docs in enumerate(chunked(records, plan.shard_size)):
        yield i, docs, verify_shard(plan.output, i, plan.settings)


def shard_images(plan: Plan, docs: list[tuple]) -> tuple[list[tuple], tuple | None]:
    """(the docs to store, (image vectors, mask) or None for a text-only model)."""
    if plan.images is None:
        return docs, None
    return split_images(docs, plan.images, plan.fields)


def encode_shards(plan: Plan) -> tuple[int, float]:
    """Encodes every unfinished shard in turn; (shards in the corpus, seconds spent encoding)."""
    kill_after = int(os.environ.get(KILL_AFTER_ENV, "0") or 0)
    total_docs = plan.records  # an upper bound (some may be dropped): the progress total and ETA
    bar = is_terminal() and plan.verbose
    shards = written = done_docs = 0
    encode_s, t_start = 0.0, time.perf_counter()
    plan.say(f"encoding with {plan.model} ({getattr(plan.embedder, 'engine', 'unknown engine')})")
    for i, docs, record in shard_stream(plan):
        shards = i + 1
        done_docs += len(docs)
        if record is not None:
            plan.say(f"shard {i:05d}: finished before ({record['count']} documents), skipped")
            continue
        t0 = time.perf_counter()
        docs, images = shard_images(plan, docs)
        write_docs(plan.output, i, docs)
        texts = [d[1] for d in docs]
        vectors = plan.embedder.encode_docs(texts, plan.batch_size, progress=bar, images=images)  # (docs, dim)
        write_vectors(plan.output, i, vectors, plan.settings)
        took = time.perf_counter() - t0
        encode_s += took
        written += 1
        rate = done_docs / max(time.perf_counter() - t_start, 1e-9)
        plan.say(
            f"shard {i:05d}: {len(docs)} documents in {took:.1f} s ({len(docs) / max(took, 1e-9):.0f} docs/s); "
            f"{done_docs}/~{total_docs} documents, ETA {format_eta(max(total_docs - done_docs, 0) / rate)}"
        )
        if kill_after and written >= kill_after:
            os.kill(os.getpid(), signal.SIGKILL)
    if shards == 0:
        raise UserError(f"{plan.corpus}: no documents")
    return shards, encode_s


def start_build(plan: Plan):
    """(plan, manifest of a finished build or None) for a `plan_build` plan: what the local and the
    Beam builds do first. When nothing is finished yet, OUTPUT exists and holds no stale temporary files."""
    done = finished_manifest(plan)
    if done is not None:
        plan.say(f"{plan.output}: already built ({done['count']} documents, {done['backend']}); nothing to do")
        return plan, done
    plan.output.mkdir(parents=True, exist_ok=True)
    remove_stale(plan.output)
    return plan, None


def build_index(
    model: str,
    corpus: str | Path,
    output: str | Path,
    backend: str = "exact",
    analyzer: str = "default",
    shard_size: int = 10000,
    batch_size: int = 64,
    verbose: bool = True,
    max_line_bytes: int = MAX_LINE_BYTES,
    fields: Sequence[str] | None = None,
    filterable: Sequence[str] = (),
    **backend_params,
) -> dict:
    """Builds (or resumes, or finishes) the index of CORPUS in OUTPUT; returns the manifest.

    Rerunning a finished build with the same arguments only checks it; with another backend,
    analyzer or backend parameters it reuses the shards and rebuilds the rest; with another model,
    corpus or shard size it is refused. `max_line_bytes` bounds one corpus line. `fields`: the
    stored fields (None: all), `filterable`: those requests may filter on."""
    plan, done = start_build(
        plan_build(
            model,
            corpus,
            output,
            backend,
            analyzer,
            shard_size,
            batch_size,
            verbose,
            backend_params,
            max_line_bytes,
            fields,
            filterable,
        )
    )
    if done is not None:
        return done
    shards, encode_s = encode_shards(plan)
    return finish_plan(plan, shards, encode_s)


def finish_plan(plan: Plan, shards: int, encode_s: float, runner: str = "local") -> dict:
    """After PLAN's SHARDS are encoded (by RUNNER, in ENCODE_S seconds): the dropped corpus lines
    told, the search structures built and the manifest written; returns the manifest."""
    for line in describe_dropped(plan.dropped):
        plan.say(f"warning: {plan.corpus}: {line}")
    return finish(
        plan.output,
        plan.settings,
        shards,
        plan.embedder,
        plan.backend,
        plan.analyzer,
        plan.backend_params,
        plan.corpus,
        plan.dropped,
        plan.started,
        encode_s,
        plan.say,
        runner=runner,
        filterable=plan.filterable,
    )
