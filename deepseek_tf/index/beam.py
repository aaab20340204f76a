"""The encode step of `deepseek-tf index` as an Apache Beam pipeline (`--runner`).

The driver streams the corpus once and writes each unfinished shard's docs file (cheap), then the
pipeline encodes them:

    shard numbers -> Reshuffle -> (shard, row, text) -> BatchElements -> EncodeDoFn -> GroupByKey(shard)
    -> WriteShardDoFn (the shard's .npy and record, the same format as the local build)

and the driver finishes the index (BM25, dense backend, manifest) as the local build does. For a
model whose document tower reads image vectors the driver also writes each pending shard's vectors
and mask beside its docs file (`shards/.NNNNN.images.tmp`, a float32 (count, image_dim + 1) array:
the vector, then the mask) for the workers to read with the texts, and removes it once the shard is
written; a killed run's leftovers go the way of every other temporary file. The
embedder is loaded once per worker in `EncodeDoFn.setup` from the same MODEL spec (a preset, a
trained model dir, an exported SavedModel), and refused if its fingerprint differs from the
driver's. On a distributed runner --output and a path MODEL must be the same shared directory on
the driver and every worker (NFS, gcsfuse, ...), and workers need deepseek_tf installed
(a container image or `--setup_file`). Needs `pip install 'deepseek_tf[beam]'`.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import numpy as np

from deepseek_tf.data.beir import MAX_LINE_BYTES
from deepseek_tf.errors import UserError
from deepseek_tf.files import atomic_write
from deepseek_tf.index.build import finish_plan, plan_build, shard_images, shard_stream, start_build
from deepseek_tf.index.shards import SHARD_DIR, read_docs, save_npy, verify_shard, write_docs, write_vectors

_root = logging.getLogger()
_level = _root.level
_root.setLevel(logging.ERROR)  # Beam's GCP modules log warnings about missing cloud clients on import
try:
    import apache_beam as beam
    from apache_beam.options.pipeline_options import PipelineOptions
except ImportError:  # an optional dependency: one line for the CLI, a clean skip for the tests
    raise UserError("--runner needs Apache Beam: pip install 'deepseek_tf[beam]'") from None
finally:
    _root.setLevel(_level)


def images_path(output: str | Path, shard: int) -> Path:
    """Where the driver leaves a shard's image vectors and mask for the workers (temporary)."""
    return Path(output) / SHARD_DIR / f".{shard:05d}.images.tmp"


def write_images(output: Path, shard: int, images: tuple[np.ndarray, np.ndarray]) -> None:
    vectors, mask = images
    rows = np.concatenate([vectors, mask[:, None]], axis=1).astype(np.float32)  # (count, image_dim + 1)
    atomic_write(images_path(output, shard), lambda p: save_npy(p, rows))


def shard_texts(shard: int, output: str):
    """(shard, row within the shard, text, image row or None) for every document of a shard's docs
    file; an image row is the document's image vector followed by its mask."""
    path = images_path(output, shard)
    images = np.load(path) if path.is_file() else None
    for row, (_, text) in enumerate(read_docs(Path(output), shard)):
        yield shard, row, text, None if images is None else images[row]


class EncodeDoFn(beam.DoFn):
    """A batch of (shard, row, text) -> (shard, (row, vector)) per document; the embedder is loaded
    once per worker, in setup()."""

    def __init__(self, model: str, fingerprint: str):
        self.model, self.fingerprint, self.embedder = model, fingerprint, None

    def setup(self):
        from deepseek_tf.retrieval.artifacts import load_embedder

        self.embedder = load_embedder(self.model)
        if self.embedder.fingerprint != self.fingerprint:
            raise UserError(
                f"--model {self.model}: on this worker its fingerprint is {self.embedder.fingerprint}, "
                f"on the driver {self.fingerprint}; workers must see the same model"
            )

    def process(self, batch):
        images = None
        if self.embedder.image_dim is not None:
            rows = np.stack([e[3] for e in batch])  # (batch, image_dim + 1)
            images = (rows[:, :-1], rows[:, -1])
        vectors = self.embedder.encode_docs([e[2] for e in batch], batch_size=len(batch), images=images)
        for (shard, row, *_), vec in zip(batch, vectors):  # vectors: (batch, dim)
            yield shard, (row, vec)


class WriteShardDoFn(beam.DoFn):
    """(shard, [(row, vector)]) -> the shard's .npy and record; yields the shard number."""

    def __init__(self, output: str, settings: dict):
        self.output, self.settings = output, settings

    def process(self, element):
        shard, rows = element
        rows = sorted(rows, key=lambda r: r[0])
        vectors = np.stack([v for _, v in rows]).astype(np.float32)  # (count, dim)
        write_vectors(Path(self.output), shard, vectors, self.settings)
        yield shard


def encode_pipeline(pipeline, model: str, output: Path, shards: list[int], settings: dict, batch_size: int):
    """Adds the encode step for `shards` to `pipeline`; returns the PCollection of written shard numbers."""
    return (
        pipeline
        | "shards" >> beam.Create(shards)
        | "spread" >> beam.Reshuffle()
        | "texts" >> beam.FlatMap(shard_texts, str(output))
        | "batch" >> beam.BatchElements(min_batch_size=1, max_batch_size=batch_size)
        | "encode" >> beam.ParDo(EncodeDoFn(model, settings["model_fingerprint"]))
        | "by shard" >> beam.GroupByKey()
        | "write" >> beam.ParDo(WriteShardDoFn(str(output), settings))
    )


def run_encode(
    model: str, output: Path, shards: list[int], settings: dict, batch_size: int, runner: str, pipeline_args: list[str]
) -> None:
    options = PipelineOptions(list(pipeline_args), runner=runner)
    try:
        with beam.Pipeline(options=options) as pipeline:
            encode_pipeline(pipeline, model, output, shards, settings, batch_size)
    except UserError:
        raise
    except Exception as e:  # a worker's error arrives wrapped in the runner's own exception
        lines = [line for line in str(e).splitlines() if line.strip()]
        raise UserError(
            f"the Beam pipeline failed on {runner}: {lines[-1] if lines else e.__class__.__name__}"
        ) from None


def build_index_beam(
    model: str,
    corpus: str | Path,
    output: str | Path,
    runner: str = "DirectRunner",
    pipeline_args: list[str] | None = None,
    backend: str = "exact",
    analyzer: str = "default",
    shard_size: int = 10000,
    batch_size: int = 64,
    verbose: bool = True,
    max_line_bytes: int = MAX_LINE_BYTES,
    fields=None,
    filterable=(),
    **backend_params,
) -> dict:
    """`build_index` with the encoding run as a Beam pipeline on RUNNER; same files, same manifest
    (its build.runner names the runner). Resumes like the local build: finished shards are skipped."""
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
    pending, shards = [], 0
    for i, docs, record in shard_stream(plan):
        shards = i + 1
        if record is None:
            docs, images = shard_images(plan, docs)
            write_docs(plan.output, i, docs)
            if images is not None:
                write_images(plan.output, i, images)
            pending.append(i)
    if shards == 0:
        raise UserError(f"{plan.corpus}: no documents")
    t0 = time.perf_counter()
    try:
        if pending:
            plan.say(f"encoding {len(pending)} of {shards} shards on {runner}")
            run_encode(plan.model, plan.output, pending, plan.settings, batch_size, runner, pipeline_args or [])
    finally:
        for i in pending:
            images_path(plan.output, i).unlink(missing_ok=True)
    encode_s = time.perf_counter() - t0
    for i in pending:
        if verify_shard(plan.output, i, plan.settings) is None:
            raise UserError(f"the Beam pipeline finished without writing shard {i:05d}; run the build again")
    return finish_plan(plan, shards, encode_s, runner=runner)
