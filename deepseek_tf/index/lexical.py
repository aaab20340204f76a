"""The lexical side of a built index: BM25 over the shards' texts with a recorded analyzer, and
the text store that answers `text(id)` by reading one line of a shard's docs file.

Both read the shards one at a time. BM25 keeps each document's terms as integer ids of one
vocabulary (bm25s indexes from ids), never the texts; `default` is resolved on the whole
corpus: the CJK share of each shard weighted by its letters and digits.
"""

from __future__ import annotations

import json
import logging
import os
import threading
from pathlib import Path

import numpy as np

from deepseek_tf.errors import UserError
from deepseek_tf.index.shards import read_docs, shard_paths
from deepseek_tf.retrieval.bm25 import BM25Index
from deepseek_tf.text.analyzer import CJK_SHARE, Analyzer, cjk_share

BM25_DIR = "bm25"
OFFSETS_FILE = "docs.offsets.npy"
IDS_FILE = "ids.json"


def resolve_analyzer(setting: str, output: Path, shards: int) -> Analyzer:
    """The analyzer `setting` names, with `default` decided on every shard's texts."""
    analyzer = Analyzer(setting)
    if setting != "default":
        return analyzer
    cjk = letters = 0.0
    for i in range(shards):
        texts = [t for _, t in read_docs(output, i)]
        weight = sum(c.isalnum() for t in texts for c in t)
        cjk += cjk_share(texts) * weight
        letters += weight
    return Analyzer("cjk" if letters and cjk / letters >= CJK_SHARE else "mixed")


class StoredBM25(BM25Index):
    """BM25Index built shard by shard from a built index's docs files, saved with bm25s's own
    files and loaded back (memory-mapped) with the analyzer its manifest names."""

    def build(self, output: Path, shards: int, ids: list[str]) -> StoredBM25:
        vocab: dict[str, int] = {}
        token_ids: list[list[int]] = []
        for i in range(shards):
            texts = [t for _, t in read_docs(output, i)]
            for terms in self.analyzer(texts):
                token_ids.append([vocab.setdefault(t, len(vocab)) for t in terms])
        if not vocab:
            raise UserError(f"BM25: the {self.analyzer.name} analyzer finds no terms in any document")
        self.ids = list(ids)
        self.avgdl = float(np.mean([len(t) for t in token_ids])) if token_ids else 1.0
        self._bm25.index((token_ids, vocab), show_progress=False)
        return self

    def term_stats(self) -> tuple[dict[str, int], int, float, float]:
        """({term: document frequency}, documents, k1, b): what scores a document added later."""
        df = np.diff(self._bm25.scores["indptr"])  # bm25s keeps one CSC column per term
        vocab = self._bm25.vocab_dict
        return (
            {t: int(df[i]) for t, i in vocab.items() if i < len(df)},  # bm25s may add an empty token past the matrix
            int(self._bm25.scores["num_docs"]),
            self._bm25.k1,
            self._bm25.b,
        )

    def save(self, directory: Path) -> None:
        self._bm25.save(str(directory), show_progress=False)

    @classmethod
    def load(cls, directory: Path, analyzer: str, ids: list[str]) -> StoredBM25:
        import bm25s

        index = cls(analyzer=analyzer)
        logging.getLogger("bm25s").setLevel(logging.WARNING)
        try:
            index._bm25 = bm25s.BM25.load(str(directory), mmap=True, show_progress=False)
        except (OSError, ValueError, KeyError) as e:
            raise UserError(
                f"{directory}: unreadable BM25 index ({e.__class__.__name__}); build the index again"
            ) from None
        if index._bm25.scores.get("num_docs") != len(ids):
            raise UserError(
                f"{directory}: BM25 index holds {index._bm25.scores.get('num_docs')} documents, "
                f"the index {len(ids)}; build the index again"
            )
        index.ids = list(ids)
        return index


def write_offsets(output: Path, counts: list[int]) -> tuple[list[str], np.ndarray]:
    """(ids, offsets): every row's (start byte, length) in its shard's docs file, (n, 2) int64."""
    ids: list[str] = []
    offsets = np.zeros((sum(counts), 2), np.int64)
    row = 0
    for i, count in enumerate(counts):
        with shard_paths(output, i)["docs"].open("rb") as f:
            pos = 0
            for line in f:
                ids.append(json.loads(line)[0])
                offsets[row] = (pos, len(line))
                pos += len(line)
                row += 1
        if row != sum(counts[: i + 1]):
            raise UserError(
                f"{shard_paths(output, i)['docs']}: holds another number of documents than its "
                f"vectors ({count}); delete that shard's files to encode it again"
            )
    return ids, offsets


class TextStore:
    """text(row) from the shards' docs files by offset; one file descriptor per shard, read with
    os.pread, so concurrent readers (a service's threads) need no lock.

    Every shard's file is opened here, when the index loads: `index --compact` swaps in a new
    directory whose docs files sit at the same paths, and a server keeps answering from the files it
    loaded (their offsets) until it reloads."""

    def __init__(self, output: Path, counts: list[int], offsets: np.ndarray):
        self.output, self.offsets = Path(output), offsets
        self.starts = np.cumsum([0] + list(counts))
        self._fds: dict[int, int] = {}
        self._lock = threading.Lock()
        try:
            for shard in range(len(counts)):
                self._fds[shard] = os.open(shard_paths(self.output, shard)["docs"], os.O_RDONLY)
        except OSError as e:
            self.close()
            raise UserError(f"{e.filename}: unreadable document text ({e.strerror}); build the index again") from None

    def line(self, row: int) -> list:
        """[id, text] or [id, text, stored fields] of ROW."""
        shard = int(np.searchsorted(self.starts, row, side="right") - 1)
        start, length = self.offsets[row]
        return json.loads(os.pread(self._fds[shard], int(length), int(start)))

    def get(self, row: int) -> tuple[str, str]:
        line = self.line(row)
        return line[0], line[1]

    def fields(self, row: int) -> dict:
        line = self.line(row)
        return line[2] if len(line) > 2 else {}

    def close(self) -> None:
        with self._lock:
            for fd in self._fds.values():
                os.close(fd)
            self._fds.clear()

    def __del__(self):
        try:
            self.close()
        except Exception:  # interpreter shutdown: os may already be gone
            pass
