"""The index's corpus reader is the package's one corpus reader, `deepseek_tf.data.corpus`
(`search` reads a corpus through it too); these names stay importable from here."""

from __future__ import annotations

from deepseek_tf.data.corpus import (
    FORMATS,
    ID_COLUMNS,
    check_corpus,
    chunked,
    count_lines,
    iter_documents,
    iter_records,
    scan_corpus,
)

__all__ = [
    "FORMATS",
    "ID_COLUMNS",
    "check_corpus",
    "chunked",
    "count_lines",
    "iter_documents",
    "iter_records",
    "scan_corpus",
]
