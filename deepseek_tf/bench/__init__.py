"""Benchmarks against sentence-transformers and faiss (`make bench`); never imported by the library."""
