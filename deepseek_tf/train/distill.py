"""Distillation: a dual encoder learns from a cross-encoder's scores (Margin-MSE).

The teacher (`data.teacher`: a trained cross-encoder's model/ dir or its SavedModel) scores every
training pair's positive and hard negatives once, before training; the student's loss
(`train.loss: margin_mse`, or `train.distill_weight` on top of InfoNCE) makes its margins
s(q, p) − s(q, n) regress the teacher's (`losses.margin_mse`). The fast model learns from the
precise one without reading the pairs together at query time.
"""

from __future__ import annotations

import hashlib
import sys
import time
from pathlib import Path

import numpy as np

from deepseek_tf import data as data_lib
from deepseek_tf.config import Config
from deepseek_tf.errors import ConfigError, UserError
from deepseek_tf.files import atomic_write
from deepseek_tf.retrieval.rerank import Reranker, check_reranker_spec


def _negatives(pairs: data_lib.Pairs) -> list[list[str]]:
    return [[n] if isinstance(n, str) else list(n) for n in pairs.negs or []]  # (N, k)


def _wanted(pairs: data_lib.Pairs) -> set[tuple[str, str]]:
    """Every distinct (query, document) a pair's margins need: its positive and its negatives."""
    return {(q, d) for q, p, ns in zip(pairs.queries, pairs.docs, _negatives(pairs)) for d in [p, *ns]}


def teacher_margins(
    reranker: Reranker | None,
    pairs: data_lib.Pairs,
    progress: bool = False,
    known: dict[tuple[str, str], float] | None = None,
) -> np.ndarray:
    """(N, k) margins S(q_i, p_i) − S(q_i, n_ij) of a cross-encoder teacher for each training pair
    and each of its k hard negatives (`losses.margin_mse`'s targets); each distinct (query,
    document) pair is scored once, and not at all when `known` (updated in place) has its score."""
    if pairs.negs is None:
        raise UserError("distillation needs hard negatives: set data.mine_negatives or give neg_doc")
    negs = _negatives(pairs)
    score = {} if known is None else known
    missing = sorted(_wanted(pairs) - score.keys())
    if missing:
        if reranker is None:
            raise ValueError(f"{len(missing)} pairs have no known score and there is no teacher to score them")
        scores = reranker.score_pairs([q for q, _ in missing], [d for _, d in missing], progress=progress)
        score.update(zip(missing, scores.tolist()))
    return np.array(
        [[score[(q, p)] - score[(q, n)] for n in ns] for q, p, ns in zip(pairs.queries, pairs.docs, negs)], np.float32
    )


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
            raise ConfigError(
                "data.teacher scores hard negatives: set data.mine_negatives (or a pairs file with neg_doc)"
            )
        try:
            check_reranker_spec(d.teacher, name="data.teacher")
        except UserError as e:
            raise ConfigError(str(e)) from None


def _pair_key(query: str, doc: str) -> str:
    return hashlib.sha1(f"{query}\x00{doc}".encode()).hexdigest()


def load_teacher_margins(spec: str, pairs: data_lib.Pairs, cache_dir: Path, verbose: int) -> np.ndarray:
    """The teacher's (N, k) margins for `pairs`. Its scores are cached per (query, document) text in
    CACHE_DIR/teacher_scores.npz with the teacher's weights fingerprint, so a resume scores nothing
    again and a soup's members (one cache in the soup's dir) score only the pairs new to them;
    another teacher, or retrained weights, starts the cache afresh."""
    from deepseek_tf.models.loading import weights_fingerprint

    cache, fingerprint = cache_dir / "teacher_scores.npz", weights_fingerprint(Path(spec))
    by_key: dict[str, float] = {}
    if cache.is_file():
        with np.load(cache) as f:
            if str(f["teacher"]) == fingerprint:
                by_key = dict(zip(f["key"].tolist(), f["score"].tolist()))
            else:
                print(f"teacher {spec}: weights differ from those of {cache}; scoring afresh", file=sys.stderr)
    wanted = _wanted(pairs)
    known = {qd: by_key[k] for qd in wanted if (k := _pair_key(*qd)) in by_key}
    if len(known) == len(wanted):
        return teacher_margins(None, pairs, known=known)
    start, cached = time.perf_counter(), len(known)
    margins = teacher_margins(Reranker.load(spec), pairs, progress=bool(verbose), known=known)
    by_key.update((_pair_key(*qd), s) for qd, s in known.items())
    cache_dir.mkdir(parents=True, exist_ok=True)
    columns = {
        "key": np.array(list(by_key), str),
        "score": np.array(list(by_key.values()), np.float32),
        "teacher": np.array(fingerprint),
    }

    def save(tmp: Path) -> None:
        with open(tmp, "wb") as f:  # a file object: np.savez would add ".npz" to a path
            np.savez(f, **columns)

    atomic_write(cache, save)  # no half-written cache on a kill
    print(
        f"teacher {spec}: scored {len(wanted) - cached} pairs ({cached} cached), {margins.size} margins"
        f" (mean {margins.mean():.2f}, std {margins.std():.2f}) "
        f"in {time.perf_counter() - start:.1f}s",
        file=sys.stderr,
    )
    return margins
