"""Evaluation: trec_eval metrics, the dense / BM25 / hybrid / reranked systems, paired significance."""

from deepseek_tf.evaluate.metrics import recall_curve, trec_metrics
from deepseek_tf.evaluate.report import dense_run, evaluate, hybrid_run

__all__ = ["dense_run", "evaluate", "hybrid_run", "recall_curve", "trec_metrics"]
