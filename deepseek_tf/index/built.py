"""Loading a built index: `load_built_index(DIR)` -> BuiltIndex (dense and BM25 search, texts,
the model that made the vectors). Everything the manifest names must lie inside DIR and is
checked on load: sizes and headers always, sha256 of the shards, ids, offsets and BM25 files
when they total at most VERIFY_BYTES (hashing gigabytes would make every service start slow)."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import numpy as np

from deepseek_tf.data.beir import file_sha256
from deepseek_tf.errors import UserError
from deepseek_tf.index.dense import BACKENDS, DenseSearcher, ShardedVectors
from deepseek_tf.index.filters import Columns, evaluate
from deepseek_tf.index.finish import FORMAT, MANIFEST, VERSION
from deepseek_tf.index.lexical import StoredBM25, TextStore
from deepseek_tf.index.shards import read_vectors_header

VERIFY_BYTES = 1 << 30
REQUIRED = (
    "format",
    "version",
    "model",
    "model_fingerprint",
    "analyzer",
    "backend",
    "backend_params",
    "dim",
    "count",
    "shards",
    "corpus",
    "corpus_sha256",
    "files",
    "checksums",
    "build",
)


class BuiltIndex:
    """A built index, ready to search. Thread-safe for concurrent searches."""

    def __init__(
        self,
        path: Path,
        manifest: dict,
        ids: list[str],
        vectors: ShardedVectors,
        dense: DenseSearcher,
        bm25: StoredBM25,
        store: TextStore,
        columns: Columns | None = None,
    ):
        self.path, self.manifest, self.ids = Path(path), manifest, ids
        self.vectors, self._dense, self._bm25, self._store = vectors, dense, bm25, store
        self.columns = columns or Columns(len(ids), {})
        self.rows = {d: r for r, d in enumerate(ids)}  # id -> row
        self._embedder = None
        self._lock = threading.Lock()

    def embedder(self):
        """The model that made the vectors (loaded once); refused if its weights changed since."""
        with self._lock:
            if self._embedder is None:
                from deepseek_tf.retrieval.artifacts import load_embedder

                embedder = load_embedder(self.manifest["model"])
                if embedder.fingerprint != self.manifest["model_fingerprint"]:
                    raise UserError(
                        f"{self.path}: its model {self.manifest['model']} has changed since the index was "
                        f"built (fingerprint {embedder.fingerprint} != {self.manifest['model_fingerprint']}); "
                        f"build the index again"
                    )
                self._embedder = embedder
            return self._embedder

    def text(self, doc_id: str) -> str:
        """The document's text (title and text joined); KeyError for an id not in the index."""
        return self._store.get(self.rows[doc_id])[1]

    def analyze(self, texts: list[str]) -> list[list[str]]:
        """The BM25 terms of each text, by the analyzer the index was built with."""
        return self._bm25.analyzer(list(texts))

    def bm25_stats(self) -> tuple[dict[str, int], int, float, float]:
        """({term: document frequency}, documents, k1, b) of the BM25 index."""
        return self._bm25.term_stats()

    def fields(self, doc_id: str) -> dict:
        """The document's stored fields (`index --fields`); KeyError for an id not in the index."""
        return self._store.fields(self.rows[doc_id])

    def filter_mask(self, spec: dict) -> np.ndarray:
        """(n,) bool: the rows a filter (`index.filters`) selects; FilterError names what is wrong."""
        return evaluate(spec, self.columns)

    def search_dense(
        self, query_vectors: np.ndarray, k: int, mask: np.ndarray | None = None
    ) -> list[list[tuple[str, float]]]:
        """Top-k (id, inner product) per query vector, best first, among the rows MASK keeps
        (all by default). query_vectors: (q, dim)."""
        q = np.asarray(query_vectors, np.float32)
        if q.ndim != 2 or q.shape[1] != self.manifest["dim"]:
            raise UserError(f"query vectors of shape {q.shape}; this index holds {self.manifest['dim']}-d vectors")
        if k < 1:
            raise UserError("k must be >= 1")
        scores, rows = self._dense.search(q, k) if mask is None else self._dense.search_filtered(q, k, mask)
        return [[(self.ids[r], float(s)) for s, r in zip(rs, rr) if r >= 0] for rs, rr in zip(scores, rows)]

    def search_bm25(self, queries: list[str], k: int, mask: np.ndarray | None = None) -> list[list[tuple[str, float]]]:
        """Top-k (id, BM25 score) per query with the analyzer the index was built with, among the
        rows MASK keeps; documents sharing no term with a query are left out."""
        if k < 1:
            raise UserError("k must be >= 1")
        return self._bm25.search(list(queries), k, mask)


def _read_manifest(path: Path) -> dict:
    mpath = path / MANIFEST
    if not path.is_dir():
        raise UserError(f"--index {path}: no such directory")
    if not mpath.is_file():
        raise UserError(
            f"{path}: no {MANIFEST} (not an index, or its build has not finished; run "
            f"`deepseek-tf index` again to finish it)"
        )
    try:
        manifest = json.loads(mpath.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError):
        raise UserError(f"{mpath}: corrupt manifest; build the index again") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise UserError(f"{mpath}: not a deepseek_tf index manifest")
    if manifest.get("version") != VERSION:
        raise UserError(
            f"{mpath}: index format version {manifest.get('version')}, this deepseek_tf reads {VERSION}; "
            f"build the index again"
        )
    missing = [k for k in REQUIRED if k not in manifest]
    if missing or manifest["backend"] not in BACKENDS:
        raise UserError(f"{mpath}: incomplete manifest (missing {', '.join(missing) or 'a known backend'})")
    return manifest


def _inside(path: Path, name: object, what: str) -> Path:
    """PATH/name when it resolves inside the index directory. A manifest is data: one naming
    "../../etc/passwd" must not make the loader read (and quote) a file outside the index."""
    target = (path / name).resolve() if isinstance(name, str) and name else None
    if target is None or not target.is_relative_to(path.resolve()):
        raise UserError(f"{path / MANIFEST}: its {what} {name!r} lies outside the index directory; refused")
    return path / name


def _check_paths(path: Path, manifest: dict) -> None:
    """Every file the manifest names lies inside the index directory (checked before any is opened)."""
    if not isinstance(manifest["shards"], list) or not isinstance(manifest["files"], dict):
        raise UserError(f"{path / MANIFEST}: corrupt manifest (shards or files of the wrong type)")
    if not isinstance(manifest["checksums"], dict):
        raise UserError(f"{path / MANIFEST}: corrupt manifest (checksums of the wrong type)")
    for entry in manifest["shards"]:
        if not isinstance(entry, dict):
            raise UserError(f"{path / MANIFEST}: corrupt manifest (a shard entry is not an object)")
        _inside(path, entry.get("file"), "shard file")
        _inside(path, entry.get("docs"), "shard documents")
    for key, name in manifest["files"].items():
        if name is not None:
            _inside(path, name, f"{key} file")
    for name in manifest["checksums"]:
        _inside(path, name, "checksummed file")
    filters = manifest.get("filters") or {}
    if not isinstance(filters, dict) or not all(isinstance(f, dict) for f in filters.values()):
        raise UserError(f"{path / MANIFEST}: corrupt manifest (filters of the wrong type)")
    for field, entry in filters.items():
        for name in (entry.get("files") or {}).values():
            _inside(path, name, f"filter file of {field!r}")


def _check_files(path: Path, manifest: dict, verify: bool) -> None:
    """ids, offsets, BM25 and faiss files against the manifest's sizes and sha256 (hashed when
    `verify`): an edited ids.json would otherwise serve other documents under the ids."""
    named = {manifest["files"].get(k) for k in ("ids", "offsets")}
    if not named <= set(manifest["checksums"]) or not any(
        n.startswith(f"{manifest['files'].get('bm25')}/") for n in manifest["checksums"]
    ):
        raise UserError(
            f"{path / MANIFEST}: has no checksums for its ids, offsets or BM25 files; build the index again"
        )
    for name, want in manifest["checksums"].items():
        f = path / name
        if not f.is_file():
            raise UserError(f"{f}: missing index file; build the index again")
        if not isinstance(want, dict) or f.stat().st_size != want.get("bytes"):
            raise UserError(
                f"{f}: size differs from the manifest (changed after the index was built); build the index again"
            )
        if verify and file_sha256(f) != want.get("sha256"):
            raise UserError(f"{f}: checksum mismatch (changed after the index was built); build the index again")


def _indexed_bytes(path: Path, manifest: dict) -> int:
    shards = sum(f.stat().st_size for e in manifest["shards"] if (f := path / e["file"]).is_file())
    others = sum(
        w["bytes"] for w in manifest["checksums"].values() if isinstance(w, dict) and isinstance(w.get("bytes"), int)
    )
    return shards + others


def _check_shards(path: Path, manifest: dict, verify: bool) -> list[Path]:
    files = []
    for entry in manifest["shards"]:
        f = path / entry["file"]
        if not f.is_file():
            raise UserError(f"{f}: missing shard file; build the index again")
        shape, dtype, offset = read_vectors_header(f)
        if shape != (entry["count"], manifest["dim"]) or dtype != np.float32:
            raise UserError(
                f"{f}: holds {shape} {dtype}, the manifest says ({entry['count']}, {manifest['dim']}) float32"
            )
        if f.stat().st_size != offset + entry["count"] * manifest["dim"] * 4:
            raise UserError(f"{f}: truncated (file size does not match its header); build the index again")
        if not (path / entry["docs"]).is_file():
            raise UserError(f"{path / entry['docs']}: missing shard documents; build the index again")
        files.append(f)
    if sum(e["count"] for e in manifest["shards"]) != manifest["count"]:
        raise UserError(f"{path / MANIFEST}: shard counts do not add up to {manifest['count']}")
    if verify:
        for entry in manifest["shards"]:
            for key, name in (("sha256", "file"), ("docs_sha256", "docs")):
                if file_sha256(path / entry[name]) != entry[key]:
                    raise UserError(
                        f"{path / entry[name]}: checksum mismatch (changed after the index was built); "
                        f"build the index again"
                    )
    return files


def load_built_index(path: str | Path, verify: bool | None = None) -> BuiltIndex:
    """Opens the index at PATH; one-line UserError when anything is missing, truncated, corrupt or
    inconsistent. `verify`: check shard checksums (default: when they total at most VERIFY_BYTES)."""
    path = Path(path)
    manifest = _read_manifest(path)
    _check_paths(path, manifest)
    if verify is None:
        verify = _indexed_bytes(path, manifest) <= VERIFY_BYTES
    files = _check_shards(path, manifest, verify)
    _check_files(path, manifest, verify)
    try:
        ids = json.loads((path / manifest["files"]["ids"]).read_text(encoding="utf-8"))
        offsets = np.load(path / manifest["files"]["offsets"], mmap_mode="r")
    except (OSError, ValueError) as e:
        raise UserError(
            f"{path}: unreadable ids or text offsets ({e.__class__.__name__}); build the index again"
        ) from None
    if len(ids) != manifest["count"] or offsets.shape != (manifest["count"], 2):
        raise UserError(
            f"{path}: ids/offsets hold {len(ids)}/{offsets.shape[0]} rows, the manifest "
            f"{manifest['count']}; build the index again"
        )
    # faiss indexes hold their own copy of the vectors: the shards stay memory-mapped, read only
    # for IVF-PQ's exact rescoring
    vectors = ShardedVectors.open(files, in_memory=None if manifest["backend"] == "exact" else False)
    dense = DenseSearcher(manifest["backend"], vectors, path, manifest["backend_params"])
    bm25_dir = path / manifest["files"]["bm25"]
    if not bm25_dir.is_dir():
        raise UserError(f"{bm25_dir}: missing BM25 index; build the index again")
    bm25 = StoredBM25.load(bm25_dir, manifest["analyzer"], ids)
    store = TextStore(path, [e["count"] for e in manifest["shards"]], offsets)
    columns = Columns.load(path, manifest.get("filters") or {}, len(ids))
    return BuiltIndex(path, manifest, ids, vectors, dense, bm25, store, columns)
