"""The page at `GET /` (deepseek_tf/serve/static/index.html): served as one static HTML file with
nothing from other hosts; in headless Chromium (`deepseek_tf.bench.page.Chromium`) against a live
server it runs a query in two modes side by side and shows exactly what `POST /search` answers
(titles as text, shared ids, latencies), server errors and a bad filter inline.

The browser tests skip when no Chromium binary is found, unless DEEPSEEK_TF_REQUIRE_BROWSER=1 or
CI is set (`.ci/run` sets the first): there they fail."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import re

import numpy as np
import pytest
from serve_fakes import FakeIndex, serving

pytest.importorskip("fastapi")
httpx = pytest.importorskip("httpx")
from fastapi.testclient import TestClient  # noqa: E402

from deepseek_tf.bench.page import Chromium, find_chromium, page_url  # noqa: E402
from deepseek_tf.serve.app import Limits, create_app  # noqa: E402
from deepseek_tf.serve.page import page_html  # noqa: E402
from deepseek_tf.serve.service import SearchService, ServiceOptions  # noqa: E402

LIMITS = Limits(max_k=20)
# stored fields of the results; a title may hold markup, which the page must show as text
FIELDS = {
    "wing-1": {"title": "<img src=x onerror=\"document.title='pwned'\">Wing <b>flutter</b>", "year": 1962},
    "wing-2": {"title": "Swept wing transition", "year": 1958, "tags": ["wing", "boundary layer"]},
    "heat-1": {"title": "Hypersonic heat transfer", "in_stock": True},
    "heat-2": {"title": "Heat flux on a blunt body", "price": 12.5},
    "shell-1": {"title": "Buckling of thin shells"},
    "shell-2": {"year": 1971},  # no title: the id is shown
    "jet-1": {"title": "Jet noise"},
}  # jet-2: no fields at all
COLUMN = """(() => Object.fromEntries(["left", "right"].map((side) => {
  const col = document.getElementById(side);
  const text = (selector, root = col) => (root.querySelector(selector) || {}).textContent;
  return [side, {
    state: col.dataset.state || null,
    mode: col.querySelector(".mode").value,
    rerank_hidden: col.querySelector(".rerank-label").hidden,
    rerank_disabled: col.querySelector(".rerank").disabled,
    latency: text(".latency"), shared: text(".shared-count"), error: text(".error"),
    hits: [...col.querySelectorAll(".hit")].map((li) => ({
      id: li.dataset.id, title: text(".title", li), score: text(".score", li), meta: text(".meta", li) || "",
      shared: li.classList.contains("shared"),
    })),
  }];
})))()"""
DONE = "document.body.dataset.state === 'done'"


class FieldsService(SearchService):
    """The service with stored fields on its results, as an index built with fields answers."""

    async def search(self, *args, **kwargs):
        out = await super().search(*args, **kwargs)
        results = [{**hit, **({"fields": FIELDS[hit["id"]]} if hit["id"] in FIELDS else {})} for hit in out["results"]]
        return {**out, "results": results}


class Recorder:
    """The app, with the JSON body of every POST /search kept in `bodies`."""

    def __init__(self, app):
        self.app, self.bodies = app, []

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope["path"] != "/search":
            return await self.app(scope, receive, send)
        chunks = []

        async def receive_recorded():
            message = await receive()
            if message["type"] == "http.request":
                chunks.append(message.get("body", b""))
                if not message.get("more_body"):
                    self.bodies.append(json.loads(b"".join(chunks)))
            return message

        return await self.app(scope, receive_recorded, send)


class OverlapReranker:
    """A cross-encoder stand-in (what the service calls of one): shared words score."""

    name = "overlap"

    def score(self, query: str, docs: list[str]) -> np.ndarray:
        return np.array([len(set(query.split()) & set(d.split())) for d in docs], np.float32)


@pytest.fixture(scope="module")
def live():
    """(base URL, Recorder) of a server over the fake index, without a reranker."""
    service = FieldsService(FakeIndex(), None, ServiceOptions(max_wait_ms=1))
    app = Recorder(create_app(service, LIMITS))
    with serving(app) as port:
        yield f"http://127.0.0.1:{port}", app
    service.close()


@pytest.fixture(scope="module")
def live_rerank():
    service = FieldsService(FakeIndex(), OverlapReranker(), ServiceOptions(max_wait_ms=1))
    app = Recorder(create_app(service, LIMITS))
    with serving(app) as port:
        yield f"http://127.0.0.1:{port}", app
    service.close()


def browser_required() -> bool:
    return os.environ.get("DEEPSEEK_TF_REQUIRE_BROWSER") == "1" or os.environ.get("CI", "") not in ("", "0", "false")


@pytest.fixture(scope="module")
def browser():
    binary = find_chromium()
    if binary is None:
        reason = "no Chromium binary found (chromium, chromium-browser, google-chrome): `make install-browser`"
        if browser_required():
            pytest.fail(reason + " (required here: DEEPSEEK_TF_REQUIRE_BROWSER or CI is set)")
        pytest.skip(reason)
    with Chromium(binary, window=(1300, 900)) as b:
        # an alert would stop the page: none may be shown; one is recorded instead
        b.page("Page.addScriptToEvaluateOnNewDocument", source="window.alert = () => { window.alerted = true; };")
        yield b


def api(base: str, body: dict) -> httpx.Response:
    return httpx.post(f"{base}/search", json=body, timeout=30)


def shown(browser: Chromium, url: str) -> dict:
    browser.open(url)
    browser.wait_for(DONE)
    assert browser.evaluate("window.alerted === undefined")
    return browser.evaluate(COLUMN)


def expected_rows(answer: dict) -> list[dict]:
    rows = []
    for hit in answer["results"]:
        fields = hit.get("fields", {})
        rows.append({"id": hit["id"], "title": str(fields.get("title", hit["id"])), "score": f"{hit['score']:.4f}"})
    return rows


def check_column(column: dict, answer: dict, other: dict) -> None:
    """COLUMN as the page shows it holds ANSWER's hits in order, shared ones (in OTHER) marked."""
    assert column["state"] == "done" and column["error"] == ""
    assert [{k: h[k] for k in ("id", "title", "score")} for h in column["hits"]] == expected_rows(answer)
    theirs = {h["id"] for h in other["results"]}
    assert [h["shared"] for h in column["hits"]] == [h["id"] in theirs for h in answer["results"]]
    n = sum(h["id"] in theirs for h in answer["results"])
    assert column["shared"] == f"· {n} of {len(answer['results'])} shared"
    assert re.fullmatch(r"server \d+\.\d ms · round trip \d+\.\d ms( · cached)?", column["latency"]), column["latency"]


# ------------------------------------------------------------------ without a browser
@pytest.fixture(scope="module")
def client():
    service = SearchService(FakeIndex(), None, ServiceOptions(max_wait_ms=1))
    with TestClient(create_app(service, LIMITS)) as c:
        yield c
    service.close()


def test_get_and_head_serve_the_page_as_html(client):
    html = page_html()
    got = client.get("/")
    assert got.status_code == 200 and got.content == html
    assert got.headers["content-type"] == "text/html; charset=utf-8"
    assert got.headers["x-content-type-options"] == "nosniff"
    head = client.head("/")
    assert head.status_code == 200 and head.headers["content-type"] == "text/html; charset=utf-8"
    assert head.content == b""
    assert client.post("/").status_code == 405
    assert 'endpoint="/"' in client.get("/metrics").text  # counted as its own endpoint, not "other"


def test_the_page_loads_nothing_from_elsewhere_and_writes_server_text_as_text(client):
    html = page_html().decode("utf-8")
    assert not re.findall(r"https?://|//[a-z0-9.-]+\.[a-z]", html, re.I)  # no CDN, font or analytics host
    assert all(v.startswith("data:") for v in re.findall(r'(?:src|href)="([^"]*)"', html))
    assert "@import" not in html and "url(" not in html
    for unsafe in ("innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval(", "alert("):
        assert unsafe not in html
    # the policy allows exactly the page's own inline script and style, by hash
    policy = client.get("/").headers["content-security-policy"]
    for kind in ("script", "style"):
        (body,) = re.findall(rf"<{kind}>(.*?)</{kind}>", html, re.S)
        digest = base64.b64encode(hashlib.sha256(body.encode()).digest()).decode()
        assert f"{kind}-src 'sha256-{digest}'" in policy
    assert "default-src 'none'" in policy and "connect-src 'self'" in policy


def test_the_page_is_package_data():  # a non-editable `pip install .` ships it
    import configparser
    from fnmatch import fnmatch

    from conftest import ROOT

    config = configparser.ConfigParser()
    config.read(ROOT / "setup.cfg")
    patterns = config["options.package_data"]["deepseek_tf.serve"].split()
    assert any(fnmatch("static/index.html", p) for p in patterns)
    assert (ROOT / "deepseek_tf" / "serve" / "static" / "index.html").read_bytes() == page_html()


# ------------------------------------------------------------------ in Chromium
@pytest.mark.parametrize(
    ("left", "right", "query", "k"), [("dense", "bm25", "wing flutter", 10), ("bm25", "hybrid", "heat transfer", 5)]
)
def test_a_link_runs_both_columns_and_shows_what_the_api_answers(browser, live, left, right, query, k):
    base, app = live
    app.bodies.clear()
    page = shown(browser, page_url(base, query, left, right, k))
    answers = {
        side: api(base, {"query": query, "k": k, "mode": mode}).json()
        for side, mode in (("left", left), ("right", right))
    }
    # the page sent just these fields: no "fields", no "rerank", no "filter"
    assert sorted(app.bodies[:2], key=lambda b: b["mode"]) == sorted(
        ({"query": query, "k": k, "mode": m} for m in (left, right)), key=lambda b: b["mode"]
    )
    assert page["left"]["mode"] == left and page["right"]["mode"] == right
    check_column(page["left"], answers["left"], answers["right"])
    check_column(page["right"], answers["right"], answers["left"])
    shared = sum(h["shared"] for h in page["left"]["hits"])  # the cases have shared and unshared ids
    assert 0 < shared < max(len(page["left"]["hits"]), len(page["right"]["hits"]))
    # a markup title is text: no element made from it, nothing it says ran
    assert browser.evaluate("document.querySelectorAll('.hit img, .hit b').length") == 0
    assert browser.evaluate("document.title") == "deepseek_tf search"
    # other stored fields are listed beside the id
    hits = {h["id"]: h for h in page["left"]["hits"] + page["right"]["hits"]}
    if "wing-2" in hits:
        assert hits["wing-2"]["meta"] == 'wing-2 · year: 1958 · tags: ["wing","boundary layer"]'
    # a server without a reranker: the rerank checkbox is hidden and off
    assert page["left"]["rerank_hidden"] and page["left"]["rerank_disabled"]


def test_enter_in_the_query_box_runs_both_searches_and_makes_a_link(browser, live):
    base, _ = live
    browser.open(base + "/")
    assert browser.evaluate("document.body.dataset.state === undefined && !document.querySelector('.hit')")
    browser.evaluate("document.getElementById('k').value = '5'")
    browser.evaluate("document.querySelector('#right .mode').value = 'hybrid'")
    browser.type_text("#q", "shell buckling")
    browser.press_enter()
    browser.wait_for(DONE)
    page = browser.evaluate(COLUMN)
    left = api(base, {"query": "shell buckling", "k": 5, "mode": "dense"}).json()
    right = api(base, {"query": "shell buckling", "k": 5, "mode": "hybrid"}).json()
    check_column(page["left"], left, right)
    check_column(page["right"], right, left)
    assert browser.evaluate("location.search") == "?q=shell+buckling&k=5&left=dense&right=hybrid"


def test_server_errors_show_inline_in_each_column(browser, live):
    base, _ = live
    page = shown(browser, page_url(base, "wing", k=50))  # over the server's max_k of 20
    answer = api(base, {"query": "wing", "k": 50, "mode": "dense"})
    assert answer.status_code == 422
    message = "{code}: {message}".format(**answer.json()["error"])
    for side in ("left", "right"):
        assert page[side]["state"] == "error" and page[side]["hits"] == []
        assert page[side]["error"] == message
        assert page[side]["shared"] == ""


def test_a_bad_filter_is_shown_and_nothing_is_sent(browser, live):
    base, app = live
    app.bodies.clear()
    browser.open(page_url(base, "wing", filter='{"brand": "apple",'))
    browser.wait_for("document.getElementById('filter-error').textContent !== ''")
    assert browser.evaluate("document.getElementById('filter-error').textContent").startswith(
        "filter is not valid JSON"
    )
    browser.open(page_url(base, "wing", filter="[1, 2]"))
    browser.wait_for("document.getElementById('filter-error').textContent !== ''")
    assert browser.evaluate("document.getElementById('filter-error').textContent").startswith(
        "filter must be a JSON object"
    )
    assert browser.evaluate(COLUMN)["left"]["state"] is None
    assert app.bodies == []


def test_a_filter_is_sent_as_the_filter_field(browser, live):
    base, app = live
    app.bodies.clear()
    spec = {"in_stock": True}
    page = shown(browser, page_url(base, "heat", filter=json.dumps(spec)))
    assert [b.get("filter") for b in app.bodies] == [spec, spec]
    answer = api(base, {"query": "heat", "k": 10, "mode": "dense", "filter": spec})
    if answer.status_code == 200:  # what the page shows is the API's answer, or its error
        assert [h["id"] for h in page["left"]["hits"]] == [h["id"] for h in answer.json()["results"]]
    else:
        assert page["left"]["error"] == "{code}: {message}".format(**answer.json()["error"])


def test_rerank_checkbox_sends_rerank_on_a_server_with_a_reranker(browser, live_rerank):
    base, app = live_rerank
    app.bodies.clear()
    page = shown(browser, page_url(base, "heat transfer", "dense", "dense", 5, left_rerank="1"))
    assert not page["left"]["rerank_hidden"] and not page["left"]["rerank_disabled"]
    assert sorted(b.get("rerank", False) for b in app.bodies) == [False, True]
    reranked = api(base, {"query": "heat transfer", "k": 5, "mode": "dense", "rerank": True}).json()
    plain = api(base, {"query": "heat transfer", "k": 5, "mode": "dense"}).json()
    assert [h["id"] for h in reranked["results"]] != [h["id"] for h in plain["results"]]
    check_column(page["left"], reranked, plain)
    check_column(page["right"], plain, reranked)
    assert "left_rerank=1" in browser.evaluate("location.search")
