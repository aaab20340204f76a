"""Filters over stored fields: the columns an index keeps for its `--filterable` fields, and the
request language that selects documents by them.

A column's type is inferred from every document's value when the index is built and recorded in
the manifest:

- `keyword`: strings, or lists of strings (a document matches when any of its values does);
- `number`: integers and floats;
- `bool`: true / false.

A document without the field matches no condition on it. A filter is a JSON object whose keys are
ANDed; a key is a field name or `and` / `or` (lists of filters) or `not` (a filter):

    {"brand": "apple", "category": {"in": ["phone", "case"]}, "price": {"gte": 100, "lt": 3000},
     "in_stock": true, "or": [{"color": "red"}, {"not": {"color": "blue"}}]}

A field's condition is a value (equality) or an object of operators: `eq`, `in` (any type),
`gt`, `gte`, `lt`, `lte` (numbers). `evaluate` gives a boolean mask over the rows.
"""

from __future__ import annotations

import bisect
import json
import math
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from deepseek_tf.errors import UserError
from deepseek_tf.files import atomic_write

FILTER_DIR = "filters"
TYPES = ("keyword", "number", "bool")
RANGE_OPS = {"gt": np.greater, "gte": np.greater_equal, "lt": np.less, "lte": np.less_equal}
OPS = ("eq", "in", *RANGE_OPS)
LOGIC = ("and", "or", "not")


class FilterError(UserError):
    """A filter a request may not ask for: the message names where (`filter.price.gte: ...`)."""


def value_type(value: object) -> str | None:
    """The column type a stored value belongs to; None for a missing value, "?" for none."""
    if value is None:
        return None
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str) or (isinstance(value, list) and all(isinstance(v, str) for v in value)):
        return "keyword"
    return "?"


def refuse_non_finite(rows: Iterable[tuple]) -> None:
    """Refuses a stored number (a field's value, or one in its list) that is NaN or infinite, naming
    the document and the field: JSON has no such number, so no answer holding it could be sent.
    ROWS: (id, text, stored fields) as a corpus is read."""
    for row in rows:
        for name, value in (row[2] if len(row) > 2 else {}).items():
            values = value if isinstance(value, list) else [value]
            if any(isinstance(v, float) and not math.isfinite(v) for v in values):
                raise UserError(
                    f"document {row[0]!r}: {name}: {json.dumps(value)[:40]} is not a finite number; "
                    "give a number or leave it out"
                )


def infer_type(name: str, values: Iterable[tuple[str, object]]) -> str:
    """The type of field NAME from (doc id, value) pairs; one-line UserError when its values mix
    types, are objects, or no document has it."""
    seen: dict[str, str] = {}
    for doc_id, value in values:
        kind = value_type(value)
        if kind == "?":
            raise UserError(
                f"--filterable {name}: document {doc_id!r} holds {json.dumps(value)[:40]}; "
                f"a filter field holds strings (or lists of them), numbers or true/false"
            )
        if kind is not None and kind not in seen:
            seen[kind] = doc_id
    if not seen:
        raise UserError(f"--filterable {name}: no document has this field")
    if len(seen) > 1:
        shown = ", ".join(f"{k} in {d!r}" for k, d in seen.items())
        raise UserError(f"--filterable {name}: its values mix types ({shown}); make them one type")
    return next(iter(seen))


class Columns:
    """The filterable fields of a set of rows: {name: (type, data)}. data is, by type:
    number (n,) float64 with NaN for missing; bool (n,) int8 with -1 for missing; keyword
    (rows (m,) int64, codes (m,) int64, terms list): one entry per (row, value)."""

    def __init__(self, n: int, columns: dict[str, tuple[str, object]]):
        self.n, self.columns = n, columns

    @property
    def types(self) -> dict[str, str]:
        return {name: kind for name, (kind, _) in self.columns.items()}

    @classmethod
    def from_values(cls, types: dict[str, str], rows: list[dict], ids: list[str] | None = None) -> Columns:
        """Columns of ROWS' stored fields (each a dict; IDS: their documents' ids) with the given
        types; a value of another type, or a number that is NaN or infinite (no range or equality
        means anything on it, and JSON has none), is a UserError naming the document and the field."""
        n, columns = len(rows), {}
        for name, kind in types.items():
            values = [r.get(name) for r in rows]
            for row, v in enumerate(values):
                kind_of = value_type(v)
                if kind_of in (None, kind) and not (kind_of == "number" and not math.isfinite(v)):
                    continue
                where = f"document {ids[row]!r}: " if ids is not None else ""
                shown = json.dumps(v)[:40]
                if kind_of == kind:
                    raise UserError(f"{where}{name}: {shown} is not a finite number; give a number or leave it out")
                raise UserError(f"{where}{name}: {shown} is not a {kind}, as this index's {name} is")
            if kind == "number":
                data = np.array([np.nan if v is None else v for v in values], np.float64)
            elif kind == "bool":
                data = np.array([-1 if v is None else int(v) for v in values], np.int8)
            else:
                pairs = [
                    (r, t) for r, v in enumerate(values) if v is not None for t in ([v] if isinstance(v, str) else v)
                ]
                terms = sorted({t for _, t in pairs})
                code = {t: i for i, t in enumerate(terms)}
                data = (
                    np.array([r for r, _ in pairs], np.int64),
                    np.array([code[t] for _, t in pairs], np.int64),
                    terms,
                )
            columns[name] = (kind, data)
        return cls(n, columns)

    def save(self, output: Path) -> dict:
        """Writes OUTPUT/filters/<i>.*; returns the manifest's "filters" entry {name: {type, files}}."""
        entry = {}
        for i, (name, (kind, data)) in enumerate(self.columns.items()):
            base = f"{FILTER_DIR}/{i}"
            if kind == "keyword":
                rows, codes, terms = data
                files = {"rows": f"{base}.rows.npy", "codes": f"{base}.codes.npy", "terms": f"{base}.terms.json"}
                _save(output / files["rows"], rows)
                _save(output / files["codes"], codes)
                atomic_write(
                    output / files["terms"], lambda p, t=terms: p.write_text(json.dumps(t, ensure_ascii=False))
                )
            else:
                files = {"values": f"{base}.values.npy"}
                _save(output / files["values"], data)
            entry[name] = {"type": kind, "files": files}
        return entry

    @classmethod
    def load(cls, output: Path, entry: dict, n: int) -> Columns:
        columns = {}
        for name, spec in entry.items():
            kind, files = spec.get("type"), spec.get("files", {})
            try:
                if kind == "keyword":
                    terms = json.loads((output / files["terms"]).read_text(encoding="utf-8"))
                    data = (np.load(output / files["rows"]), np.load(output / files["codes"]), terms)
                elif kind in ("number", "bool"):
                    data = np.load(output / files["values"])
                    if data.shape != (n,):
                        raise ValueError("wrong length")
                else:
                    raise ValueError(f"unknown type {kind!r}")
            except (OSError, ValueError, KeyError, TypeError) as e:
                raise UserError(f"{output}: unreadable filter column {name!r} ({e}); build the index again") from None
            columns[name] = (kind, data)
        return cls(n, columns)


def _save(path: Path, array: np.ndarray) -> None:
    from deepseek_tf.index.shards import save_npy

    atomic_write(path, lambda p: save_npy(p, array))


# ------------------------------------------------------------------------ the request language
def evaluate(spec: object, columns: Columns, where: str = "filter") -> np.ndarray:
    """The rows SPEC selects: (n,) bool. FilterError names the first thing wrong with SPEC."""
    if not isinstance(spec, dict):
        raise FilterError(f"{where}: must be an object of field conditions, not {type(spec).__name__}")
    mask = np.ones(columns.n, bool)
    for key, cond in spec.items():
        at = f"{where}.{key}"
        if key in ("and", "or"):
            if not isinstance(cond, list) or not cond:
                raise FilterError(f"{at}: must be a non-empty list of filters")
            parts = [evaluate(c, columns, f"{at}.{i}") for i, c in enumerate(cond)]
            mask &= np.logical_and.reduce(parts) if key == "and" else np.logical_or.reduce(parts)
        elif key == "not":
            mask &= ~evaluate(cond, columns, at)
        else:
            mask &= _field(key, cond, columns, at)
    return mask


def _field(name: str, cond: object, columns: Columns, at: str) -> np.ndarray:
    if name not in columns.columns:
        known = ", ".join(columns.columns) or "none; build the index with --filterable"
        raise FilterError(f"{at}: not a filterable field (filterable: {known})")
    kind, data = columns.columns[name]
    ops = cond if isinstance(cond, dict) else {"eq": cond}
    if not ops:
        raise FilterError(f"{at}: an empty condition")
    mask = np.ones(columns.n, bool)
    for op, value in ops.items():
        where = f"{at}.{op}" if isinstance(cond, dict) else at
        if op not in OPS:
            raise FilterError(f"{where}: unknown operator (operators: {', '.join(OPS)})")
        values = value if op == "in" else [value]
        if op == "in" and (not isinstance(value, list) or not value):
            raise FilterError(f"{where}: must be a non-empty list")
        if op in RANGE_OPS and kind != "number":
            raise FilterError(f"{where}: a range needs a number field; {name} is {kind}")
        for v in values:
            if value_type(v) != kind or isinstance(v, list):
                raise FilterError(f"{where}: {json.dumps(v)[:40]} is not a {kind}, as {name} is")
        mask &= _match(kind, data, op, values, columns.n)
    return mask


def _match(kind: str, data, op: str, values: list, n: int) -> np.ndarray:
    if op in RANGE_OPS:
        with np.errstate(invalid="ignore"):  # NaN (missing) compares False
            return RANGE_OPS[op](data, values[0])
    if kind == "number":
        return np.isin(data, np.array(values, np.float64))
    if kind == "bool":
        return np.isin(data, np.array([int(v) for v in values], np.int8))
    rows, codes, terms = data
    wanted = [i for t in values if (i := _code(terms, t)) is not None]
    mask = np.zeros(n, bool)
    if wanted:
        mask[rows[np.isin(codes, wanted)]] = True
    return mask


def _code(terms: list[str], term: str) -> int | None:
    i = bisect.bisect_left(terms, term)  # terms are sorted when the column is made
    return i if i < len(terms) and terms[i] == term else None
