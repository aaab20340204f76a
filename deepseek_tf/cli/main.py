"""`deepseek-tf COMMAND [ARGS]`: dispatches to each stage's own command, imported only when run,
so `deepseek-tf --help` answers without loading TensorFlow models."""

from __future__ import annotations

import sys
from collections.abc import Callable


def _train(argv: list[str]) -> int:
    from deepseek_tf.train.cli import main

    return main(argv)


def _evaluate(argv: list[str]) -> int:
    from deepseek_tf.evaluate.cli import main

    return main(argv)


def _export(argv: list[str]) -> int:
    from deepseek_tf.export.cli import main

    return main(argv)


def _search(argv: list[str]) -> int:
    from deepseek_tf.index.search import main

    return main(argv)


def _mine(argv: list[str]) -> int:
    from deepseek_tf.retrieval.cli import mine_main

    return mine_main(argv)


def _index(argv: list[str]) -> int:
    from deepseek_tf.index.cli import main

    return main(argv)


def _serve(argv: list[str]) -> int:
    from deepseek_tf.serve.cli import main

    return main(argv)


def _ask(argv: list[str]) -> int:
    from deepseek_tf.answer.cli import main

    return main(argv)


def _bench(argv: list[str]) -> int:
    from deepseek_tf.bench.bench import main

    return main(argv)


def _bench_ann(argv: list[str]) -> int:
    from deepseek_tf.bench.ann import main

    return main(argv)


# name -> (one-line summary, runner)
COMMANDS: dict[str, tuple[str, Callable[[list[str]], int]]] = {
    "train": ("train a dual encoder or cross-encoder from a YAML config", _train),
    "evaluate": ("trec_eval metrics of dense, BM25, hybrid and reranked systems on a BEIR split", _evaluate),
    "export": ("raw-string SavedModel or verified (quantized) TFLite files", _export),
    "search": ("top-k documents of a corpus for queries (saved index, optional reranker)", _search),
    "mine": ("hard negatives from BM25 or a model into a pairs file", _mine),
    "index": ("build a sharded, resumable index of a large corpus (exact or faiss ANN, plus BM25)", _index),
    "serve": ("HTTP search service over a built index (micro-batching, cache, hybrid, rerank)", _serve),
    "ask": ("an answer with numbered sources from an index and an OpenAI-compatible generator", _ask),
    "bench": ("side-by-side benchmarks against sentence-transformers", _bench),
    "bench-ann": ("exact TensorFlow search against faiss on random vectors", _bench_ann),
}

USAGE = """usage: deepseek-tf COMMAND [ARGS]   (deepseek-tf COMMAND --help for a command's options)

Neural semantic search in TensorFlow/Keras 3.

commands:
{commands}

examples:
  deepseek-tf train --config configs/cranfield_minilm.yaml
  deepseek-tf evaluate --model runs/cranfield_minilm/model --dataset ../shared/data/cranfield --baseline bm25
  deepseek-tf export --model runs/cranfield_minilm/model --format tflite --output export/minilm
"""


def usage() -> str:
    width = max(map(len, COMMANDS))
    return USAGE.format(commands="\n".join(f"  {name:<{width}}  {summary}" for name, (summary, _) in COMMANDS.items()))


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(usage())
        return 0
    if argv[0] in ("-V", "--version"):
        from deepseek_tf import __version__

        print(f"deepseek-tf {__version__}")
        return 0
    if argv[0] not in COMMANDS:
        print(f"error: unknown command {argv[0]!r}; one of: {', '.join(COMMANDS)}", file=sys.stderr)
        return 2
    return COMMANDS[argv[0]][1](argv[1:])
