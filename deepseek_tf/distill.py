"""Distillation: a dual encoder learns from a cross-encoder's scores (Margin-MSE).

The teacher (`data.teacher`: a trained cross-encoder's model/ dir or its SavedModel) scores every
training pair's positive and hard negatives once, before training; the student's loss
(`train.loss: margin_mse`, or `train.distill_weight` on top of InfoNCE) makes its margins
s(q, p) − s(q, n) regress the teacher's (`losses.margin_mse`). The fast model learns from the
precise one without reading the pairs together at query time.
"""
from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np

from deepseek_tf import data as data_lib
from deepseek_tf.config import Config
from deepseek_tf.errors import ConfigError, UserError
from deepseek_tf.rerank import Reranker, check_reranker_spec


def teacher_margins(reranker: Reranker, pairs: data_lib.Pairs, progress: bool = False) -> np.ndarray:
    """(N, k) margins S(q_i, p_i) − S(q_i, n_ij) of a cross-encoder teacher for each training pair
    and each of its k hard negatives (`losses.margin_mse`'s targets); each distinct (query,
    document) pair is scored once."""
    if pairs.negs is None:
        raise UserError("distillation needs hard negatives: set data.mine_negatives or give neg_doc")
    negs = [[n] if isinstance(n, str) else list(n) for n in pairs.negs]  # (N, k)
    wanted = {(q, d) for q, p, ns in zip(pairs.queries, pairs.docs, negs) for d in [p, *ns]}
    keys = sorted(wanted)
    scores = reranker.score_pairs([q for q, _ in keys], [d for _, d in keys], progress=progress)
    score = dict(zip(keys, scores.tolist()))
    return np.array([[score[(q, p)] - score[(q, n)] for n in ns]
                     for q, p, ns in zip(pairs.queries, pairs.docs, negs)], np.float32)


def check_distillation(config: Config) -> None:
    """data.teacher and a distilling loss come together, with hard negatives, before anything is written."""
    d, t = config.data, config.train
    distills = t.loss == "margin_mse" or t.distill_weight != 0.0
    if t.distill_weight < 0:
        raise ConfigError(f"train.distill_weight must be >= 0, got {t.distill_weight}")
    if distills and not d.teacher:
        raise ConfigError("train.loss margin_mse / train.distill_weight need data.teacher (a trained cross-encoder)")
    if d.teacher and not distills:
        raise ConfigError("data.teacher needs train.loss: margin_mse or train.distill_weight > 0")
    if d.teacher:
        if not (d.mine_negatives or d.pairs):
            raise ConfigError("data.teacher scores hard negatives: set data.mine_negatives (or a pairs file with neg_doc)")
        try:
            check_reranker_spec(d.teacher, name="data.teacher")
        except UserError as e:
            raise ConfigError(str(e)) from None


def load_teacher_margins(spec: str, pairs: data_lib.Pairs, workdir: Path, verbose: int) -> np.ndarray:
    """The teacher's (N, k) margins for `pairs`, scored once per workdir (a resume reads them back)."""
    cache = workdir / "teacher_margins.npy"
    if cache.is_file():
        margins = np.load(cache)
        if len(margins) == len(pairs):
            return margins
    start = time.perf_counter()
    margins = teacher_margins(Reranker.load(spec), pairs, progress=bool(verbose))
    with open(cache.with_name("teacher_margins.tmp.npy"), "wb") as f:  # no half-written cache on a kill
        np.save(f, margins)
    cache.with_name("teacher_margins.tmp.npy").replace(cache)
    print(f"teacher {spec}: {margins.size} margins (mean {margins.mean():.2f}, std {margins.std():.2f}) "
          f"in {time.perf_counter() - start:.1f}s", file=sys.stderr)
    return margins
