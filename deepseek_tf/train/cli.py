"""`deepseek-tf train` (`python -m deepseek_tf.train`) and `deepseek-tf crossfit`."""
from __future__ import annotations

import argparse
from pathlib import Path

from deepseek_tf.config import add_run_arguments, config_and_workdir
from deepseek_tf.console import command_parser
from deepseek_tf.errors import cli_entry
from deepseek_tf.train.crossfit import crossfit
from deepseek_tf.train.run import train


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = command_parser("train", "Train a retrieval model from a YAML config.",
                       ['deepseek-tf train --config configs/cranfield_minilm.yaml', 'deepseek-tf train --config configs/tiny.yaml --set data.dataset=DIR --set train.learning_rate=3e-4 --workdir runs/tiny', 'python -m deepseek_tf.train --config configs/cross_encoder_minilm.yaml'])
    add_run_arguments(p, "YAML config file (see configs/)", "train.batch_size=8",
                      "output directory (default: runs/<config name>)")
    return p.parse_args(argv)


@cli_entry
def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    config, workdir = config_and_workdir(args)
    history = train(config, workdir, verbose=0 if args.quiet else 1)
    loss = history.get("loss", [float("nan")])[-1]
    best = history.get("best", [{}])[0]
    extra = f", best dev nDCG@10 {best['dev_ndcg@10']:.4f} (epoch {best['epoch']})" if best else ""
    print(f"trained {history['steps'][0]} steps, final loss {loss:.4f}{extra}; model in {Path(workdir) / 'model'}")
    return 0


def crossfit_parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = command_parser("crossfit", "Out-of-fold first-stage run (TREC) of a retriever config's "
                                            "training queries, for data.negatives_from: run:PATH.",
                       ['deepseek-tf crossfit --config configs/cranfield_minilm.yaml --set train.soup=1 --output runs/crossfit.trec'])
    add_run_arguments(p, "the retriever's YAML config (model.kind: dual_encoder)", "train.soup=1",
                      "where the fold models go (default: runs/<config name>_crossfit)")
    p.add_argument("--folds", type=int, default=2, help="number of folds (default: 2)")
    p.add_argument("--top-k", type=int, default=100, help="documents per query in the run (default: 100)")
    p.add_argument("--output", required=True, help="the TREC run file to write")
    return p.parse_args(argv)


@cli_entry
def crossfit_main(argv: list[str] | None = None) -> int:
    args = crossfit_parse_args(argv)
    config, workdir = config_and_workdir(args, "_crossfit")
    run = crossfit(config, args.folds, workdir, args.output, args.top_k, verbose=0 if args.quiet else 1)
    print(f"wrote {args.output}: {len(run)} queries, each retrieved by the fold model that did not train on it")
    return 0
