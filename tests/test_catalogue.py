"""A product catalogue behind an index: stored fields, filters in every mode, exactly k results.

The catalogue is built here by hand (brand, category, price, in_stock, tags, one product without
a price); filter results are checked against the rows picked out by plain Python over the same
records, and filtered top-k against brute-force scoring of the stored vectors.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient

PRODUCTS = [
    ("p0", "iphone 15 pro case", "apple", "case", 29.0, True, ["phone", "cover"]),
    ("p1", "iphone 15 phone", "apple", "phone", 5999.0, True, ["phone"]),
    ("p2", "iphone 14 phone refurbished", "apple", "phone", 2899.0, False, ["phone", "used"]),
    ("p3", "galaxy phone case shockproof", "samsung", "case", 19.5, True, ["cover"]),
    ("p4", "galaxy s24 phone", "samsung", "phone", 4999.0, True, ["phone"]),
    ("p5", "lightweight laptop thin notebook", "lenovo", "laptop", 3999.0, True, []),
    ("p6", "laptop for travel battery", "apple", "laptop", 8999.0, False, ["travel"]),
    ("p7", "summer dress floral cotton", "zara", "dress", 199.0, True, ["summer"]),
    ("p8", "light summer dress sale", "zara", "dress", None, True, ["summer", "sale"]),
    ("p9", "trail running shoes", "nike", "shoes", 699.0, False, ["sport"]),
    ("p10", "防摔 手机壳 iphone", "apple", "case", 39.0, True, ["phone", "cover"]),
    ("p11", "cushioned sneakers running", "nike", "shoes", 899.0, True, ["sport"]),
]
KEYS = ("title", "brand", "category", "price", "in_stock", "tags")


def records() -> list[dict]:
    out = []
    for pid, title, brand, category, price, in_stock, tags in PRODUCTS:
        row = {"_id": pid, "title": title, "text": f"{title} by {brand}", "brand": brand, "category": category}
        row.update({"in_stock": in_stock, "tags": tags})
        if price is not None:
            row["price"] = price
        out.append(row)
    return out


@pytest.fixture(scope="module")
def catalogue(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("shop") / "products.jsonl"
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records()), encoding="utf-8")
    return path


def build(tiny_run, catalogue, out, **kwargs):
    from deepseek_tf.index import build_index

    return build_index(
        str(tiny_run / "model"),
        catalogue,
        out,
        verbose=False,
        filterable=["brand", "category", "price", "in_stock", "tags"],
        **kwargs,
    )


@pytest.fixture(scope="module")
def shop(tiny_run, catalogue, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("shop_index") / "index"
    build(tiny_run, catalogue, out)
    return out


def selected(predicate) -> set[str]:
    """The ids whose record satisfies PREDICATE: the reference a filter is checked against."""
    return {r["_id"] for r in records() if predicate(r)}


FILTERS = [
    ({"brand": "apple"}, lambda r: r["brand"] == "apple"),
    ({"category": {"in": ["phone", "case"]}}, lambda r: r["category"] in ("phone", "case")),
    ({"price": {"gte": 100, "lt": 3000}}, lambda r: "price" in r and 100 <= r["price"] < 3000),
    ({"in_stock": True}, lambda r: r["in_stock"]),
    ({"tags": "cover"}, lambda r: "cover" in r["tags"]),
    (
        {"brand": "apple", "category": {"in": ["phone", "case"]}, "price": {"lt": 3000}, "in_stock": True},
        lambda r: (
            r["brand"] == "apple"
            and r["category"] in ("phone", "case")
            and r.get("price", 1e9) < 3000
            and r["in_stock"]
        ),
    ),
    ({"or": [{"brand": "nike"}, {"category": "dress"}]}, lambda r: r["brand"] == "nike" or r["category"] == "dress"),
    ({"not": {"price": {"gt": 1000}}}, lambda r: not ("price" in r and r["price"] > 1000)),
    ({"brand": "no such brand"}, lambda r: False),
    ({}, lambda r: True),
]


def test_fields_are_stored_and_filter_types_inferred(shop):
    from deepseek_tf.index.built import load_built_index

    index = load_built_index(shop)
    assert index.manifest["filters"]["price"]["type"] == "number"
    assert {k: v["type"] for k, v in index.manifest["filters"].items()} == {
        "brand": "keyword",
        "category": "keyword",
        "price": "number",
        "in_stock": "bool",
        "tags": "keyword",
    }
    for r in records():
        stored = index.fields(r["_id"])
        assert stored == {k: v for k, v in r.items() if k != "_id"}, r["_id"]


@pytest.mark.parametrize("spec,predicate", FILTERS)
def test_filter_masks_select_what_the_records_say(shop, spec, predicate):
    from deepseek_tf.index.built import load_built_index

    index = load_built_index(shop)
    mask = index.filter_mask(spec)
    assert {index.ids[r] for r in np.flatnonzero(mask)} == selected(predicate)


@pytest.mark.parametrize(
    "spec,message",
    [
        ({"colour": "red"}, "filter.colour: not a filterable field"),
        ({"price": "cheap"}, 'filter.price: "cheap" is not a number'),
        ({"brand": {"gte": "a"}}, "filter.brand.gte: a range needs a number field"),
        ({"brand": {"like": "app"}}, "filter.brand.like: unknown operator"),
        ({"category": {"in": []}}, "filter.category.in: must be a non-empty list"),
        ({"or": {"brand": "apple"}}, "filter.or: must be a non-empty list"),
        ({"in_stock": 1}, "filter.in_stock: 1 is not a bool"),
        ({"not": [1]}, "filter.not: must be an object"),
    ],
)
def test_bad_filters_name_what_is_wrong(shop, spec, message):
    from deepseek_tf.index.built import load_built_index
    from deepseek_tf.index.filters import FilterError

    with pytest.raises(FilterError) as e:
        load_built_index(shop).filter_mask(spec)
    assert message in str(e.value)


def brute_force(index, query_vector: np.ndarray, mask: np.ndarray, k: int) -> list[str]:
    scores = index.vectors[0 : len(index.ids)] @ query_vector  # (n,)
    rows = [r for r in np.argsort(-scores, kind="stable") if mask[r]]
    return [index.ids[r] for r in rows[:k]]


@pytest.mark.parametrize("plan", ["gather", "scan", "faiss"])
def test_filtered_dense_search_is_exactly_the_top_k_that_pass(shop, tiny_run, catalogue, tmp_path, monkeypatch, plan):
    from deepseek_tf.index import dense
    from deepseek_tf.index.built import load_built_index

    path = shop
    if plan == "faiss":
        path = tmp_path / "hnsw"
        build(tiny_run, catalogue, path, backend="faiss-hnsw")
    monkeypatch.setattr(dense, "filtered_plan", lambda backend, passing, n: plan)
    index = load_built_index(path)
    q = index.embedder().encode_queries(["iphone phone case", "running shoes"])  # (2, dim)
    for spec, _ in FILTERS:
        mask = index.filter_mask(spec)
        k = 3
        got = index.search_dense(q, k, mask)
        for row, hits in enumerate(got):
            assert len(hits) == min(k, int(mask.sum())), (spec, plan)
            assert [d for d, _ in hits] == brute_force(index, q[row], mask, k), (spec, plan)


def test_filtered_bm25_returns_only_passing_documents(shop):
    from deepseek_tf.index.built import load_built_index

    index = load_built_index(shop)
    mask = index.filter_mask({"brand": "samsung"})
    hits = index.search_bm25(["phone case"], 10, mask)[0]
    assert [d for d, _ in hits] and {d for d, _ in hits} <= selected(lambda r: r["brand"] == "samsung")
    unfiltered = index.search_bm25(["phone case"], 10)[0]
    assert {d for d, _ in hits} == {d for d, _ in unfiltered if d in ("p3", "p4")}


@pytest.fixture(scope="module")
def client(shop):
    from deepseek_tf.serve.app import create_app
    from deepseek_tf.serve.service import SearchService, ServiceOptions

    service = SearchService.open(shop, options=ServiceOptions(max_wait_ms=1))
    with TestClient(create_app(service)) as c:
        yield c


@pytest.mark.parametrize("mode", ["dense", "bm25", "hybrid"])
def test_search_filters_in_every_mode_and_returns_fields(client, mode):
    spec, predicate = FILTERS[5]  # apple phones and cases under 3000 in stock: p0, p10
    r = client.post("/search", json={"query": "iphone phone case", "k": 5, "mode": mode, "filter": spec})
    assert r.status_code == 200, r.text
    results = r.json()["results"]
    assert {h["id"] for h in results} <= selected(predicate)
    if mode != "bm25":  # dense ranks every passing document: exactly min(k, passing) of them
        assert len(results) == len(selected(predicate))
    by_id = {rec["_id"]: rec for rec in records()}
    for h in results:
        assert h["fields"] == {k: v for k, v in by_id[h["id"]].items() if k != "_id"}


def test_search_selects_fields_and_ids_only(client):
    body = {"query": "summer dress", "k": 3, "fields": ["title", "price"]}
    results = client.post("/search", json=body).json()["results"]
    assert results and all(set(h["fields"]) <= {"title", "price"} and "title" in h["fields"] for h in results)
    bare = client.post("/search", json={**body, "fields": []}).json()["results"]
    assert [set(h) for h in bare] == [{"id", "score"}] * len(bare)
    assert [h["id"] for h in bare] == [h["id"] for h in results]


def test_search_refuses_a_bad_filter_with_422(client):
    r = client.post("/search", json={"query": "phone", "filter": {"colour": "red"}})
    assert r.status_code == 422 and "filter.colour" in r.json()["error"]["message"]


def test_filter_values_of_mixed_types_are_refused_at_build(tiny_run, tmp_path):
    from deepseek_tf.errors import UserError
    from deepseek_tf.index import build_index

    corpus = tmp_path / "mixed.jsonl"
    rows = [{"_id": "a", "text": "phone", "size": 5}, {"_id": "b", "text": "case", "size": "XL"}]
    corpus.write_text("".join(json.dumps(r) + "\n" for r in rows))
    with pytest.raises(UserError, match="--filterable size: its values mix types"):
        build_index(str(tiny_run / "model"), corpus, tmp_path / "idx", verbose=False, filterable=["size"])


def test_csv_columns_are_stored_with_their_types(tiny_run, tmp_path):
    from deepseek_tf.index import build_index
    from deepseek_tf.index.built import load_built_index

    corpus = tmp_path / "shop.csv"
    corpus.write_text(
        "id,title,text,price,in_stock,zip\nx1,red phone,a phone,12.5,true,02134\nx2,case,a case,3,false,\n"
    )
    build_index(str(tiny_run / "model"), corpus, tmp_path / "idx", verbose=False, filterable=["price", "in_stock"])
    index = load_built_index(tmp_path / "idx")
    want = {"title": "red phone", "text": "a phone", "price": 12.5, "in_stock": True, "zip": "02134"}
    assert index.fields("x1") == want
    assert index.fields("x2") == {"title": "case", "text": "a case", "price": 3, "in_stock": False, "zip": None}
    assert {index.ids[r] for r in np.flatnonzero(index.filter_mask({"price": {"gt": 5}}))} == {"x1"}


class LengthScorer:
    """A stand-in cross-encoder: longer texts score higher (what it reads is what matters here)."""

    name = "length"

    def __init__(self):
        self.read: list[str] = []

    def score(self, query: str, docs: list[str]) -> np.ndarray:
        self.read.extend(docs)
        return np.array([len(d) for d in docs], np.float32)


def test_rerank_sees_only_the_documents_the_filter_passes(shop):
    from deepseek_tf.index.live import LiveIndex
    from deepseek_tf.serve.app import create_app
    from deepseek_tf.serve.service import SearchService, ServiceOptions

    scorer = LengthScorer()
    service = SearchService(LiveIndex.open(shop), scorer, ServiceOptions(max_wait_ms=1, rerank_depth=20))
    spec, predicate = FILTERS[1]  # phones and cases
    with TestClient(create_app(service)) as c:
        r = c.post("/search", json={"query": "phone case", "k": 3, "mode": "hybrid", "rerank": True, "filter": spec})
    assert r.status_code == 200, r.text
    texts = {rec["_id"]: f"{rec['title']} {rec['text']}" for rec in records()}
    passing = selected(predicate)
    assert scorer.read and set(scorer.read) <= {texts[i] for i in passing}
    want = sorted(passing, key=lambda i: -len(texts[i]))[:3]
    assert [h["id"] for h in r.json()["results"]] == want


def test_search_command_filters_and_prints_titles(shop, tiny_run, catalogue, capsys):
    from deepseek_tf.index.search import main

    args = ["--model", str(tiny_run / "model"), "--corpus", str(catalogue), "--index", str(shop)]
    args += ["--query", "phone", "--top-k", "20", "--filter", '{"brand": "apple", "in_stock": true}']
    assert main([*args, "--json"]) == 0
    hits = json.loads(capsys.readouterr().out)[0]["hits"]
    assert {h["id"] for h in hits} == selected(lambda r: r["brand"] == "apple" and r["in_stock"])
    assert all(h["fields"]["brand"] == "apple" for h in hits)
    assert main(args) == 0
    shown = capsys.readouterr().out
    assert "iphone 15 pro case" in shown and " by apple" not in shown  # titles, not the joined text
    with pytest.raises(SystemExit) as e:  # argparse's usage error: one line, exit 2
        main([*args[:-2], "--filter", "[1]"])
    assert e.value.code == 2 and "--filter: invalid JSON object value" in capsys.readouterr().err
