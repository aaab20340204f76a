"""Retrieval: BM25, dense indexes, hybrid fusion, retrieve -> rerank, and loading any model artifact
(trained model dir, SavedModel, TFLite, preset) for inference."""
