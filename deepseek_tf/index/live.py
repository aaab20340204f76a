"""A built index that takes writes: `LiveIndex` = the built base + the documents upserted or
deleted since (its update log, `index.updates`), searchable the moment a write returns.

Writes are encoded with the index's model, appended to the log (fsynced) and then applied to an
in-memory `Delta`: the upserted documents (vectors, texts, stored fields, BM25 terms) and the
base rows they replace or delete, hidden. A search reads one delta snapshot: the base searched
with its hidden rows left out, the delta scored exactly, the two merged by score. Opening the
index replays its log, so a restart (or a reload) serves every acknowledged write.

When the index's model reads image vectors with the text (`model.doc_inputs: [text, image]`),
each written document's `image_embedding` is checked and encoded with it (`index.doc_images`: not
stored unless `index --fields` named it); a document without one reads the model's placeholder and
is counted in the answer's `without_image`. A bad vector refuses the whole write, before the log.

BM25 over the delta uses the collection statistics of base and delta together (document count,
document frequencies) and the base's average document length; `deepseek-tf index --compact`
folds the delta into a new base, where every statistic is exact again.
"""

from __future__ import annotations

import math
import threading
from collections import Counter
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from deepseek_tf.data.beir import IMAGE_FILE_FIELD, join_title, normalize_text
from deepseek_tf.data.corpus import stored_fields
from deepseek_tf.errors import UserError
from deepseek_tf.index.built import BuiltIndex, load_built_index
from deepseek_tf.index.doc_images import DocImages, doc_images, read_selection, split_images
from deepseek_tf.index.filters import Columns, evaluate, refuse_non_finite
from deepseek_tf.index.updates import append, decode_vector, encode_vector, log_size, read_log, write_lock

Hits = list[tuple[str, float]]
OVERFETCH_HIDDEN = 1000  # up to this many hidden base rows, a search asks the base for k + hidden


@dataclass(frozen=True)
class LiveMask:
    """A filter's rows: over the base (n,) and over the delta (m,)."""

    base: np.ndarray
    delta: np.ndarray


@dataclass(frozen=True)
class Delta:
    """One snapshot of the writes since the base: never changed, replaced by each write."""

    docs: dict = field(default_factory=dict)  # id -> (text, stored fields, vector (dim,), Counter of terms)
    hidden: frozenset = frozenset()  # base rows replaced or deleted
    seq: int = 0  # the last log entry applied
    ids: list = field(default_factory=list)
    vectors: np.ndarray | None = None  # (m, dim)
    columns: Columns | None = None
    postings: dict = field(default_factory=dict)  # term -> [(delta row, tf)]
    lengths: np.ndarray | None = None  # (m,) terms per document

    def derive(self, types: dict[str, str]) -> Delta:
        """The arrays and postings of `docs`, rebuilt (a write replaces the whole snapshot)."""
        ids = list(self.docs)
        values = list(self.docs.values())
        vectors = np.stack([v[2] for v in values]) if values else None
        postings: dict[str, list[tuple[int, int]]] = {}
        for row, (_, _, _, terms) in enumerate(values):
            for term, tf in terms.items():
                postings.setdefault(term, []).append((row, tf))
        lengths = np.array([sum(v[3].values()) for v in values], np.float64)
        columns = Columns.from_values(types, [v[1] for v in values], ids)
        return replace(self, ids=ids, vectors=vectors, columns=columns, postings=postings, lengths=lengths)


class LiveIndex:
    """`BuiltIndex`'s search interface over base + delta, plus `upsert` and `delete`. Thread-safe:
    writes are serialised, searches read whichever snapshot is current when they start."""

    def __init__(self, base: BuiltIndex):
        self.base, self.path, self.manifest = base, base.path, base.manifest
        self._row = base.rows  # id -> base row, the base's own map
        self._write = threading.Lock()
        self._log_length: int | None = None
        self._stats = None  # base BM25 statistics, read on first use
        self._delta = Delta(seq=int(base.manifest.get("update_seq", 0))).derive(self.columns.types)

    @classmethod
    def open(cls, path: str | Path) -> LiveIndex:
        """The index at PATH with every acknowledged write in its update log applied."""
        index = cls(load_built_index(path))
        index._catch_up()
        return index

    def _catch_up(self) -> None:
        """Applies the log entries this object has not seen: all of them when it opens, and before
        a write those another process (`index --update`) appended meanwhile. Sequence numbers
        run on across compactions (the manifest's `update_seq`), so "not seen" is "seq above ours"."""
        entries, self._log_length = read_log(self.path)
        self._delta = self._apply(self._delta, [e for e in entries if e["seq"] > self._delta.seq])

    # ------------------------------------------------------------------ reading
    @property
    def columns(self) -> Columns:
        return self.base.columns

    @property
    def count(self) -> int:
        d = self._delta
        return len(self.base.ids) - len(d.hidden) + len(d.docs)

    @property
    def ids(self) -> list[str]:
        d = self._delta
        return [i for r, i in enumerate(self.base.ids) if r not in d.hidden] + d.ids

    @property
    def seq(self) -> int:
        return self._delta.seq

    @property
    def delta(self) -> Delta:
        """The writes applied now (a snapshot: never changed in place)."""
        return self._delta

    def embedder(self):
        return self.base.embedder()

    @property
    def image_dim(self) -> int | None:
        """The length of the image vectors the model's document tower reads (None: text only)."""
        return getattr(self.embedder(), "image_dim", None)  # any object with encode_docs serves as embedder

    def __contains__(self, doc_id: str) -> bool:
        d = self._delta
        return doc_id in d.docs or (doc_id in self._row and self._row[doc_id] not in d.hidden)

    def _base_row(self, doc_id: str) -> int:
        row = self._row[doc_id]
        if row in self._delta.hidden:
            raise KeyError(doc_id)
        return row

    def text(self, doc_id: str) -> str:
        doc = self._delta.docs.get(doc_id)
        return doc[0] if doc is not None else self.base.text(self.base.ids[self._base_row(doc_id)])

    def fields(self, doc_id: str) -> dict:
        doc = self._delta.docs.get(doc_id)
        return doc[1] if doc is not None else self.base.fields(self.base.ids[self._base_row(doc_id)])

    def filter_mask(self, spec: dict) -> LiveMask:
        d = self._delta
        return LiveMask(evaluate(spec, self.base.columns), evaluate(spec, d.columns))

    def _base_search(self, search, query, k: int, mask: LiveMask | None, d: Delta) -> list[Hits]:
        """SEARCH (the base's dense or BM25) top-k without the hidden rows."""
        if not d.hidden:
            return search(query, k) if mask is None else search(query, k, mask.base)
        if mask is None and len(d.hidden) <= OVERFETCH_HIDDEN:  # ask for more, drop the hidden
            hits = search(query, k + len(d.hidden))
        else:
            keep = np.ones(len(self.base.ids), bool) if mask is None else mask.base.copy()
            keep[list(d.hidden)] = False
            hits = search(query, k, keep)
        return [[(i, s) for i, s in h if self._row[i] not in d.hidden][:k] for h in hits]

    def search_dense(self, query_vectors: np.ndarray, k: int, mask: LiveMask | None = None) -> list[Hits]:
        d = self._delta
        q = np.asarray(query_vectors, np.float32)  # (q, dim)
        hits = self._base_search(self.base.search_dense, q, k, mask, d)
        if d.vectors is None:
            return hits
        scores = q @ d.vectors.T  # (q, m)
        if mask is not None:
            scores[:, ~mask.delta] = -np.inf
        return [
            _merge(h, [(d.ids[r], float(s[r])) for r in np.argsort(-s)[:k] if s[r] > -np.inf], k)
            for h, s in zip(hits, scores)
        ]

    def search_bm25(self, queries: list[str], k: int, mask: LiveMask | None = None) -> list[Hits]:
        d = self._delta
        hits = self._base_search(self.base.search_bm25, list(queries), k, mask, d)
        if not d.docs:
            return hits
        out = []
        for h, terms in zip(hits, self.base.analyze(queries)):
            scores = self._delta_bm25(terms, d)
            if mask is not None:
                scores[~mask.delta] = 0.0
            order = [r for r in np.argsort(-scores, kind="stable")[:k] if scores[r] > 0]
            out.append(_merge(h, [(d.ids[r], float(scores[r])) for r in order], k))
        return out

    def _delta_bm25(self, terms: list[str], d: Delta) -> np.ndarray:
        """BM25 (Lucene's, as bm25s scores the base) of each delta document for query TERMS."""
        df_base, n_base, avgdl, k1, b = self._bm25_stats()
        n = n_base + len(d.docs)
        scores = np.zeros(len(d.docs), np.float64)
        for term in terms:
            posting = d.postings.get(term)
            if not posting:
                continue
            df = df_base(term) + len(posting)
            idf = math.log(1 + (n - df + 0.5) / (df + 0.5))
            for row, tf in posting:
                scores[row] += idf * tf / (k1 * (1 - b + b * d.lengths[row] / avgdl) + tf)
        return scores

    def _bm25_stats(self):
        if self._stats is None:
            df, n, k1, b = self.base.bm25_stats()
            avgdl = self.manifest.get("bm25_avgdl") or self._base_avgdl()
            self._stats = (lambda t: df.get(t, 0), n, avgdl, k1, b)
        return self._stats

    def _base_avgdl(self) -> float:
        """Average terms per base document, counted from the texts (indexes built without it recorded)."""
        lengths = [len(t) for t in self.base.analyze([self.base.text(i) for i in self.base.ids])]
        return float(np.mean(lengths)) if lengths else 1.0

    # ------------------------------------------------------------------ writing
    def _stored(self, doc: dict, where: str) -> tuple[str, str, dict]:
        """(id, text, stored fields) of one upserted document, as `index` reads a corpus record."""
        doc_id = doc.get("_id", doc.get("id"))
        if isinstance(doc_id, bool) or not isinstance(doc_id, str | int) or not str(doc_id).strip():
            raise UserError(f"{where}._id: a non-empty string or integer id is required")
        title, body = doc.get("title") or "", doc.get("text") or ""
        if not isinstance(title, str) or not isinstance(body, str):
            raise UserError(f"{where}: title and text must be strings")
        title, body = normalize_text(title), normalize_text(body)
        text = join_title({"title": title, "text": body})
        if not text:
            raise UserError(f"{where}: no text (title and text are empty)")
        extra = {k: v for k, v in doc.items() if k not in ("_id", "id", "title", "text")}
        images = doc_images(self.embedder())
        keep = read_selection(self.stored_selection, images)
        fields = stored_fields(title, body, extra, None if keep is None else set(keep))
        if images is not None and images.reader is not None and fields.get(IMAGE_FILE_FIELD) is not None:
            # a request naming files on the server's disk: the CLI, which reads the user's own files, adds them
            raise UserError(
                f"{where}: this index's model reads image files, which requests do not carry; "
                "add the documents with `deepseek-tf index --update DIR --corpus FILE`"
            )
        if images is not None and images.reader is None:  # checked here too, so that the error names the item
            try:
                images.inputs([(str(doc_id), text, fields)])
            except UserError as e:
                raise UserError(f"{where}: {e}") from None
        return str(doc_id), text, fields

    @property
    def stored_selection(self) -> set[str] | None:
        """The fields this index stores (`index --fields`; None: all)."""
        chosen = self.manifest.get("stored_fields", "all")
        return None if chosen == "all" else set(chosen)

    def _apply(self, d: Delta, entries: list[dict]) -> Delta:
        """The snapshot after ENTRIES (log entries, in order); the arrays are rebuilt once."""
        if not entries:
            return d
        docs, hidden = dict(d.docs), set(d.hidden)
        dim = int(self.manifest["dim"])
        for entry in entries:
            upserts = entry.get("upsert") or []
            terms = self.base.analyze([u["text"] for u in upserts]) if upserts else []
            for u, t in zip(upserts, terms):
                docs.pop(u["id"], None)  # a replaced document moves to the end, as a new one
                docs[u["id"]] = (u["text"], u["fields"], decode_vector(u["vector"], dim), Counter(t))
                if u["id"] in self._row:
                    hidden.add(self._row[u["id"]])
            for doc_id in entry.get("delete") or []:
                docs.pop(doc_id, None)
                if doc_id in self._row:
                    hidden.add(self._row[doc_id])
        return Delta(docs=docs, hidden=frozenset(hidden), seq=entries[-1]["seq"]).derive(self.columns.types)

    def _commit(self, entry: dict) -> int:
        with self._write, write_lock(self.path):
            if self._log_length is None or self._log_length != log_size(self.path):
                self._catch_up()  # another process wrote since
            entry = {"seq": self._delta.seq + 1, **entry}
            delta = self._apply(self._delta, [entry])  # a bad document fails here, before the log
            self._log_length = append(self.path, entry, self._log_length)
            self._delta = delta
            return entry["seq"]

    def upsert(self, docs: list[dict], batch_size: int = 64) -> dict:
        """Adds or replaces DOCS ({"_id", "title", "text", other fields}); searchable (dense and
        BM25) and durable (fsynced) when this returns. {"upserted": n, "seq": log position}, and
        `without_image` (documents that had no image vector) for a model that reads images."""
        if not docs:
            raise UserError("documents: give at least one")
        return self.upsert_rows([self._stored(doc, f"documents.{i}") for i, doc in enumerate(docs)], batch_size)

    def upsert_rows(
        self, rows: list[tuple[str, str, dict]], batch_size: int = 64, images: DocImages | None = None
    ) -> dict:
        """`upsert` of rows already read as `data.corpus.iter_records` reads a corpus: (id, the
        text the model reads, stored fields; for a model that reads images, read with
        `doc_images.read_selection`, so that the fields hold the image vector or file). IMAGES says
        where a corpus's relative image paths start (default: the model's, from here)."""
        return self.commit_upserts(*self.encode_rows(rows, batch_size, images))

    def encode_rows(
        self, rows: list[tuple[str, str, dict]], batch_size: int = 64, images: DocImages | None = None
    ) -> tuple[list[dict], int | None]:
        """(the log's upsert items for ROWS, as `upsert_rows` takes them; how many had no image, or
        None for a text-only model): every row checked and encoded, nothing written. Ids must be distinct."""
        ids = [r[0] for r in rows]
        if len(set(ids)) != len(ids):
            raise UserError(f"documents: id {next(i for i in ids if ids.count(i) > 1)!r} appears twice")
        doc = images or doc_images(self.embedder())
        images = None
        if doc is not None:
            rows, images = split_images(rows, doc, self.stored_selection)
        refuse_non_finite(rows)
        Columns.from_values(self.columns.types, [r[2] for r in rows], ids)  # a filter field of the wrong type
        texts = [r[1] for r in rows]
        vectors = np.asarray(self.embedder().encode_docs(texts, batch_size, images=images), np.float32)
        upsert = [{"id": i, "text": t, "fields": f, "vector": encode_vector(v)} for (i, t, f), v in zip(rows, vectors)]
        return upsert, None if images is None else int(len(rows) - images[1].sum())

    def commit_upserts(self, upsert: list[dict], without_image: int | None = None) -> dict:
        """Writes UPSERT (`encode_rows`'s items, distinct ids) as one log entry: all or nothing."""
        out = {"upserted": len(upsert), "seq": self._commit({"upsert": upsert})}
        if without_image is not None:
            out["without_image"] = without_image
        return out

    def delete(self, ids: list[str]) -> dict:
        """Removes the documents; {"deleted": [ids that were there], "seq"}: hidden from every search
        when this returns, durable."""
        present = [i for i in dict.fromkeys(ids) if i in self]
        if not present:
            return {"deleted": [], "seq": self.seq}
        return {"deleted": present, "seq": self._commit({"delete": present})}


def _merge(a: Hits, b: Hits, k: int) -> Hits:
    return sorted(a + b, key=lambda h: -h[1])[:k]
