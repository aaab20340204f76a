"""Evaluation: trec_eval metrics, the dense / BM25 / hybrid / reranked systems, paired significance."""

from deepseek_tf import lazy_exports

__all__ = ["dense_run", "evaluate", "hybrid_run", "recall_curve", "trec_metrics"]
__getattr__ = lazy_exports(
    __name__,
    {
        "recall_curve": "deepseek_tf.evaluate.metrics",
        "trec_metrics": "deepseek_tf.evaluate.metrics",
        "dense_run": "deepseek_tf.evaluate.report",
        "evaluate": "deepseek_tf.evaluate.report",
        "hybrid_run": "deepseek_tf.evaluate.report",
    },
)
