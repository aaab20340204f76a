"""`deepseek-tf train` (`python -m deepseek_tf.train`)."""

from __future__ import annotations

import argparse
from pathlib import Path

from deepseek_tf.config import add_run_arguments, config_and_workdir
from deepseek_tf.console import command_parser
from deepseek_tf.errors import cli_entry


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = command_parser(
        "train",
        "Train a retrieval model from a YAML config.",
        [
            "deepseek-tf train --config configs/cranfield_minilm.yaml",
            "deepseek-tf train --config configs/tiny.yaml --set data.dataset=DIR --set train.learning_rate=3e-4 --workdir runs/tiny",  # noqa: E501 (a command to copy whole)
            "python -m deepseek_tf.train --config configs/cross_encoder_minilm.yaml",
        ],
    )
    add_run_arguments(
        p, "YAML config file (see configs/)", "train.batch_size=8", "output directory (default: runs/<config name>)"
    )
    return p.parse_args(argv)


@cli_entry
def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from deepseek_tf.train.run import train

    config, workdir = config_and_workdir(args)
    history = train(config, workdir, verbose=0 if args.quiet else 1)
    loss = history.get("loss", [float("nan")])[-1]
    best = history.get("best", [{}])[0]
    extra = f", best dev nDCG@10 {best['dev_ndcg@10']:.4f} (epoch {best['epoch']})" if best else ""
    print(f"trained {history['steps'][0]} steps, final loss {loss:.4f}{extra}; model in {Path(workdir) / 'model'}")
    return 0
