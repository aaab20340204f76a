"""Which engine encodes texts for a Keras model, and how it uses the cores: chosen once per
process by a command (`--engine`, `serve --threads`) before it loads a model. No TensorFlow
here: a command's `--help` stays quick."""

from __future__ import annotations

import os
from dataclasses import dataclass

from deepseek_tf.errors import UserError

# `--engine`: what encodes texts for a Keras model (a SavedModel or .tflite runs as itself)
ENGINES = {
    "auto": "OpenVINO when it is installed and matches Keras on probe texts, else Keras",
    "openvino": "OpenVINO, or an error when it cannot run the model",
    "keras": "the Keras model in TensorFlow",
}
DEFAULT_ENGINE = "auto"
ENGINE_ENV = "DEEPSEEK_TF_ENGINE"  # the process's engine when no --engine is given (e.g. a test run)
PRECISIONS = {"auto": None, "bf16": "bf16", "f32": "f32"}  # None: the CPU plugin's own choice


@dataclass(frozen=True)
class Settings:
    """How compiled towers use the cores: `streams` model calls at once, `threads` each.

    By default one call per core with one thread each: a command encoding a corpus runs that many
    batches at once, and `serve` that many micro-batches (`--threads`, `--intra-op-threads`). On 2
    cores this encoded more Cranfield documents and QBQTC queries per second than one call on
    both cores (docs/results.md, Encode peers)."""

    streams: int | None = None  # None: one per core this process may use
    threads: int | None = None  # per call; None: the cores divided among the streams
    precision: str = "auto"

    def layout(self) -> tuple[int, int]:
        """(calls at once, threads per call)."""
        streams = self.streams or default_threads()
        return streams, self.threads or max(1, default_threads() // streams)


_settings = Settings()
_engine = os.environ.get(ENGINE_ENV) or DEFAULT_ENGINE


def configure(
    engine: str | None = None, streams: int | None = None, threads: int | None = None, precision: str | None = None
) -> None:
    """Process-wide choice of engine and threads, made by a command before it loads a model."""
    global _settings, _engine
    if _engine not in ENGINES:
        raise UserError(f"${ENGINE_ENV}={_engine!r}: choose one of {', '.join(ENGINES)}")
    if engine is not None:
        if engine not in ENGINES:
            raise UserError(f"--engine {engine!r}: choose one of {', '.join(ENGINES)}")
        _engine = engine
    if precision is not None and precision not in PRECISIONS:
        raise UserError(f"--precision {precision!r}: choose one of {', '.join(PRECISIONS)}")
    _settings = Settings(
        streams=streams if streams is not None else _settings.streams,
        threads=threads if threads is not None else _settings.threads,
        precision=precision if precision is not None else _settings.precision,
    )


def current_engine() -> str:
    if _engine not in ENGINES:
        raise UserError(f"${ENGINE_ENV}={_engine!r}: choose one of {', '.join(ENGINES)}")
    return _engine


def current_settings() -> Settings:
    return _settings


def default_threads() -> int:
    """The CPUs this process may run on (a container's or taskset's share, not the host's count)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # no sched_getaffinity (macOS)
        return os.cpu_count() or 1


def add_engine_argument(parser) -> None:
    """`--engine` for commands that encode with a MODEL."""
    choices = "; ".join(f"{k}: {v}" for k, v in ENGINES.items())
    parser.add_argument(
        "--engine",
        choices=list(ENGINES),
        help=f"what encodes texts for a Keras model ({choices}; default: ${ENGINE_ENV} or {DEFAULT_ENGINE})",
    )
