"""Answers with sources (`deepseek_tf.answer`, POST /answer, `deepseek-tf ask`) over a real built
index (the tiny trained model), against a fake OpenAI-compatible generator on 127.0.0.1 that
records the prompts it is sent: passages in rank order within the token budget, citations mapped
back to ids, streaming as the chunks arrive, retries, timeouts, garbage, the answer cache, and an
API key that is sent but never shown."""

from __future__ import annotations

import asyncio
import json
import logging
import subprocess
import sys
import threading
import time

import pytest
from answer_fakes import REPLY, FakeGenerator
from conftest import run_cli_here

pytest.importorskip("fastapi")
from fastapi.testclient import TestClient  # noqa: E402

from deepseek_tf.answer.citations import cited_numbers  # noqa: E402
from deepseek_tf.answer.flow import Answerer  # noqa: E402
from deepseek_tf.answer.generator import Generator  # noqa: E402
from deepseek_tf.answer.prompt import MIN_CUT_TOKENS, Passage, build_prompt, estimate_tokens, load_template  # noqa: E402
from deepseek_tf.answer.settings import API_KEY_ENV, GeneratorSettings  # noqa: E402
from deepseek_tf.errors import UserError  # noqa: E402
from deepseek_tf.serve.app import create_app  # noqa: E402

KEY = "sk-test-0123456789-do-not-show"
QUESTION = "summer dress"


@pytest.fixture(scope="module")
def built(tiny_index):
    """tiny_beir's corpus indexed by the tiny model (conftest: built once, shared with test_serve_index)."""
    return tiny_index


@pytest.fixture(scope="module")
def service(built):
    from deepseek_tf.serve.service import SearchService, ServiceOptions

    service = SearchService.open(built, options=ServiceOptions(max_wait_ms=1))
    yield service
    service.close()


@pytest.fixture
def fake():
    f = FakeGenerator()
    yield f
    f.close()


@pytest.fixture
def serve(service, fake, monkeypatch):
    """serve(**settings): a client of the service answering through the fake generator (or the
    `url` given), the API key in the environment; retries 0.05 s apart."""
    monkeypatch.setenv(API_KEY_ENV, KEY)
    service.answer_cache.clear()
    opened = []

    def start(url: str | None = None, **settings) -> TestClient:
        chosen = GeneratorSettings(url=url or fake.url, model="fake-model", backoff=0.05, **settings)
        service.answerer = Answerer(chosen, on_call=service.metrics.observe_generator)
        client = TestClient(create_app(service))
        opened.append(client.__enter__())
        return client

    yield start
    for client in opened:
        client.__exit__(None, None, None)
    service.answerer = None


def _ids(client, k: int, mode: str = "dense") -> list[dict]:
    r = client.post("/search", json={"query": QUESTION, "k": k, "mode": mode})
    assert r.status_code == 200, r.text
    return r.json()["results"]


def _text(built, doc_id: str) -> str:
    from deepseek_tf.index.built import load_built_index

    return load_built_index(built).text(doc_id)


def _metric(client, line_start: str) -> float:
    lines = client.get("/metrics").text.splitlines()
    return sum(float(x.rsplit(" ", 1)[1]) for x in lines if x.startswith(line_start))


def test_passages_go_in_rank_order_and_citations_map_back_to_ids(serve, fake, built):
    c = serve()
    found = _ids(c, 4, "hybrid")
    r = c.post("/answer", json={"question": QUESTION, "k": 4, "mode": "hybrid"})
    assert r.status_code == 200, r.text
    out = r.json()
    assert out["answer"] == REPLY and out["truncated"] is None and out["cached"] is False
    assert out["retrieval_ms"] >= 0 and out["generation_ms"] > 0
    # [1][3] then [2, 9] and [0]: 9 and 0 name no passage given; the order is the answer's
    titles = {h["id"]: h["fields"]["title"] for h in found}
    assert out["citations"] == [
        {"n": n, "id": found[n - 1]["id"], "title": titles[found[n - 1]["id"]]} for n in (1, 3, 2)
    ]
    prompt = fake.prompts[-1]
    at = [prompt.index(f"[{n}] {_text(built, h['id'])}") for n, h in enumerate(found, 1)]
    assert at == sorted(at) and "[5] " not in prompt and QUESTION in prompt
    sent = fake.requests[-1]
    assert sent["path"] == "/v1/chat/completions" and sent["headers"]["Authorization"] == f"Bearer {KEY}"
    assert sent["body"]["model"] == "fake-model" and sent["body"]["max_tokens"] == 512 and not sent["body"]["stream"]


def test_the_budget_cuts_or_drops_the_first_passage_that_does_not_fit_and_names_it():
    template = load_template()
    frame = estimate_tokens(template.replace("{question}", "q").replace("{passages}", ""))
    words = [Passage(f"en-{i}", " ".join(f"word{i}" for _ in range(80)), f"t{i}") for i in range(4)]  # 119 tokens
    chinese = Passage("zh", "防摔手机壳" * 30)  # 150 tokens: one per CJK character
    passages = [words[0], chinese, *words[1:]]
    fits = estimate_tokens("[1] " + words[0].text) + estimate_tokens("\n\n[2] " + chinese.text)
    budget = int(frame + fits + 60)  # 60 tokens left for passage [3]: cut
    p = build_prompt("q", passages, template, budget)
    assert [x.id for x in p.passages] == ["en-0", "zh", "en-1"] and estimate_tokens(p.text) <= budget
    assert p.truncated == {"n": 3, "id": "en-1", "cut": True, "left_out": 2}
    assert p.passages[2].text and words[1].text.startswith(p.passages[2].text) and "[3] " in p.text
    p = build_prompt("q", passages, template, int(frame + fits + MIN_CUT_TOKENS - 5))  # too little: dropped
    assert [x.id for x in p.passages] == ["en-0", "zh"] and "[3]" not in p.text
    assert p.truncated == {"n": 3, "id": "en-1", "cut": False, "left_out": 2}
    assert build_prompt("q", passages[:1], template, 10_000).truncated is None
    with pytest.raises(UserError, match="take about"):
        build_prompt("why " * 400, passages, template, 200)


def test_the_served_budget_names_the_passage_it_dropped(serve, fake, built):
    found = [h["id"] for h in _ids(serve(), 6)]
    frame = estimate_tokens(load_template().replace("{question}", QUESTION).replace("{passages}", ""))
    two = estimate_tokens(f"[1] {_text(built, found[0])}") + estimate_tokens(f"\n\n[2] {_text(built, found[1])}")
    budget = int(frame + two) + 5  # room for two passages, too little to cut a third
    c = serve(context=budget + 16, max_tokens=16)
    out = c.post("/answer", json={"question": QUESTION, "k": 6}).json()
    assert out["truncated"] == {"n": 3, "id": found[2], "cut": False, "left_out": 3}
    prompt = fake.prompts[-1]
    assert f"[2] {_text(built, found[1])}" in prompt and "[3]" not in prompt and estimate_tokens(prompt) <= budget
    assert fake.requests[-1]["body"]["max_tokens"] == 16


@pytest.mark.parametrize(
    "text,count,numbers",
    [
        ("a [1] b", 3, [1]),
        ("a [2, 3] b [1]", 3, [2, 3, 1]),
        ("a [1][3] b [3]", 3, [1, 3]),
        ("[2-4] and [1; 2]", 5, [2, 3, 4, 1]),
        ("[0] [4] [2024] [x] [] [1.5]", 3, []),
        ("no markers", 3, []),
    ],
)
def test_citation_markers(text, count, numbers):
    assert cited_numbers(text, count) == numbers


def _events(lines) -> list[tuple[str | None, str]]:
    """(event name or None, data) of each server-sent event."""
    out, name = [], None
    for line in lines:
        if line.startswith("event: "):
            name = line[7:]
        elif line.startswith("data: "):
            out.append((name, line[6:]))
            name = None
    return out


def test_streaming_passes_the_chunks_on_as_they_arrive_then_the_citations(serve, fake):
    c = serve()
    fake.chunks, fake.gate = ["Dresses ", "are light [2]", " and cheap [1]."], threading.Event()
    found = [h["id"] for h in _ids(c, 3)]
    with c.stream("POST", "/answer", json={"question": QUESTION, "k": 3, "stream": True}) as r:
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
        lines = r.iter_lines()
        first = next(x for x in lines if x.startswith("data: "))
        # the first chunk is here while the generator still holds back the rest
        assert not fake.gate.is_set() and json.loads(first[6:])["choices"][0]["delta"]["content"] == "Dresses "
        fake.gate.set()
        events = _events(lines)
    assert fake.gate_opened == [True]
    chunks = [json.loads(d)["choices"][0]["delta"]["content"] for name, d in events if name is None]
    assert chunks == fake.chunks[1:] and [name for name, _ in events] == [None, None, "citations"]
    final = json.loads(events[-1][1])
    assert final["answer"] == "".join(fake.chunks) and final["cached"] is False
    assert [(x["n"], x["id"]) for x in final["citations"]] == [(2, found[1]), (1, found[0])]
    assert fake.requests[-1]["body"]["stream"] is True

    # the same question again: from the cache, the whole answer in one chunk, then the citations
    r = c.post("/answer", json={"question": QUESTION, "k": 3, "stream": True})
    events = _events(r.text.splitlines())
    assert len(fake.requests) == 1 and [name for name, _ in events] == [None, "citations"]
    assert json.loads(events[0][1])["choices"][0]["delta"]["content"] == final["answer"]
    assert json.loads(events[1][1])["citations"] == final["citations"] and json.loads(events[1][1])["cached"]


def test_a_second_identical_question_comes_from_the_cache(serve, fake):
    c = serve()
    first = c.post("/answer", json={"question": QUESTION, "k": 3}).json()
    again = c.post("/answer", json={"question": QUESTION, "k": 3}).json()
    assert len(fake.requests) == 1 and again["cached"] is True
    assert {k: again[k] for k in ("answer", "citations")} == {k: first[k] for k in ("answer", "citations")}
    c.post("/answer", json={"question": QUESTION, "k": 2})  # other passages: asked again
    assert len(fake.requests) == 2
    assert _metric(c, 'deepseek_answers_total{outcome="cached"}') >= 1
    assert _metric(c, 'deepseek_cache_hits_total{cache="answers"}') >= 1
    assert _metric(c, "deepseek_generator_call_seconds_count") >= 2


def test_a_500_is_retried_and_answered(serve, fake):
    c = serve()
    before = _metric(c, 'deepseek_generator_errors_total{reason="status"}')
    fake.script = ["500"]
    r = c.post("/answer", json={"question": QUESTION})
    assert r.status_code == 200 and r.json()["answer"] == REPLY
    assert len(fake.requests) == 2 and fake.prompts[0] == fake.prompts[1]
    assert _metric(c, 'deepseek_generator_errors_total{reason="status"}') == before + 1


def test_a_generator_past_the_timeout_is_a_504_and_search_keeps_working(serve, fake):
    c = serve(timeout=0.5)
    fake.script, fake.sleep = ["sleep"], 1.5
    start = time.perf_counter()
    r = c.post("/answer", json={"question": QUESTION})
    assert r.status_code == 504 and r.json()["error"]["code"] == "generator_timeout"
    assert fake.url in r.json()["error"]["message"] and time.perf_counter() - start < 1.4
    assert len(fake.requests) == 1  # a slow generator is not asked again
    assert c.post("/search", json={"query": QUESTION}).status_code == 200


@pytest.mark.parametrize("step", ["garbage", "no_choices", "down", "always_500"])
def test_a_generator_that_is_down_or_answers_garbage_is_a_502(serve, fake, step):
    import socket

    with socket.socket() as free:  # a port nothing listens on
        free.bind(("127.0.0.1", 0))
        down = f"http://127.0.0.1:{free.getsockname()[1]}"
    c = serve(url=down if step == "down" else None)
    fake.script = ["500"] * 3 if step == "always_500" else [step]
    r = c.post("/answer", json={"question": QUESTION})
    assert r.status_code == 502, r.text
    error = r.json()["error"]
    assert error["code"] == "generator_failed" and (down if step == "down" else fake.url) in error["message"]
    assert len(fake.requests) == {"garbage": 1, "no_choices": 1, "down": 0, "always_500": 3}[step]
    assert c.post("/search", json={"query": QUESTION}).status_code == 200


def test_the_api_key_is_sent_as_a_bearer_header_but_never_shown(serve, fake, caplog):
    caplog.set_level(logging.DEBUG)
    c = serve()
    fake.script = ["401"]  # a generator whose error quotes the key it was sent
    r = c.post("/answer", json={"question": QUESTION})
    assert r.status_code == 502 and "401" in r.text and "***" in r.text
    assert fake.requests[0]["headers"]["Authorization"] == f"Bearer {KEY}" and len(fake.requests) == 1
    shown = r.text + caplog.text + c.get("/metrics").text + c.get("/health").text
    assert KEY not in shown and "answer: the generator at" in caplog.text


def test_without_a_generator_answer_says_how_to_enable_it(service):
    with TestClient(create_app(service)) as c:
        r = c.post("/answer", json={"question": QUESTION})
    assert r.status_code == 501 and r.json()["error"]["code"] == "answer_unavailable"
    assert "--generator-url" in r.json()["error"]["message"]


@pytest.mark.parametrize(
    "body,status",
    [
        ({"question": ""}, 422),
        ({"question": " \t "}, 422),
        ({"question": QUESTION, "k": 0}, 422),
        ({"question": QUESTION, "k": 10_000}, 422),
        ({"question": QUESTION, "mode": "fuzzy"}, 422),
        ({"question": QUESTION, "stream": "yes"}, 422),
        ({"query": QUESTION}, 422),
        ({"question": QUESTION, "rerank": True}, 400),  # no --rerank
        ({"question": "why " * 900}, 422),  # over --max-query-chars
    ],
)
def test_bad_questions_are_refused_before_the_generator(serve, fake, body, status):
    r = serve().post("/answer", json=body)
    assert r.status_code == status and "error" in r.json() and not fake.requests


def test_the_generator_gets_at_most_its_concurrency_at_once(fake):
    fake.script, fake.sleep = ["sleep"] * 6, 0.2
    generator = Generator(GeneratorSettings(url=fake.url, model="m", concurrency=2))

    async def ask_all():
        try:
            return await asyncio.gather(*(generator.complete([{"role": "user", "content": "hi"}]) for _ in range(6)))
        finally:
            await generator.aclose()

    assert asyncio.run(ask_all()) == [REPLY] * 6 and fake.most_active == 2


def test_ask_prints_the_answer_and_its_sources(built, fake, monkeypatch):
    monkeypatch.setenv(API_KEY_ENV, KEY)
    flags = ["--index", str(built), "--generator-url", fake.url, "--generator-model", "m"]
    done = run_cli_here("deepseek_tf.cli", "ask", *flags, "--top-k", "3", QUESTION)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0] == REPLY and lines[2] == "sources:" and [x.split()[0] for x in lines[3:]] == ["[1]", "[3]", "[2]"]
    assert fake.requests[-1]["headers"]["Authorization"] == f"Bearer {KEY}"
    done = run_cli_here("deepseek_tf.cli", "ask", *flags, "--mode", "bm25", "--json", QUESTION)
    out = json.loads(done.stdout)
    assert done.returncode == 0 and out["answer"] == REPLY and out["retrieval_ms"] >= 0
    assert [c["n"] for c in out["citations"]] == [1, 3, 2]
    assert f"[1] {_text(built, out['citations'][0]['id'])}" in fake.prompts[-1]


@pytest.mark.parametrize(
    "args,code,message",
    [
        (["  "], 1, "the question must not be empty"),
        (["--top-k", "0", QUESTION], 2, "--top-k"),
        (["--generator-timeout", "0", QUESTION], 2, "--generator-timeout"),
        (["--generator-context", "100", "--generator-max-tokens", "100", QUESTION], 2, "must be below"),
        (["--prompt-template", "{missing}", QUESTION], 2, "--prompt-template"),
        (["--prompt-template", "{bad_template}", QUESTION], 2, "a prompt template holds"),
        (["--generator-url", "{down}", QUESTION], 1, "cannot reach the generator at {down}"),
    ],
)
def test_ask_refuses_bad_input_in_one_line(built, fake, tmp_path, monkeypatch, args, code, message):
    import socket

    monkeypatch.setenv(API_KEY_ENV, KEY)
    (tmp_path / "bad.txt").write_text("no placeholders here")
    with socket.socket() as free:
        free.bind(("127.0.0.1", 0))
        down = f"http://127.0.0.1:{free.getsockname()[1]}"
    fill = lambda s: s.format(missing=tmp_path / "nope.txt", bad_template=tmp_path / "bad.txt", down=down)  # noqa: E731
    flags = ["--index", str(built), "--generator-url", fake.url, "--generator-model", "m"]
    done = run_cli_here("deepseek_tf.cli", "ask", *flags, *map(fill, args))
    err = done.stderr.strip().splitlines()
    assert done.returncode == code and len(err) == 1 and err[0].startswith("error:") and fill(message) in err[0], err
    assert KEY not in done.stderr and not done.stdout


@pytest.mark.parametrize(
    "args,message",
    [
        (["--generator-url", "http://127.0.0.1:8080"], "--generator-url needs --generator-model"),
        (["--generator-model", "m"], "--generator-model needs --generator-url"),
        (["--generator-url", "127.0.0.1:8080", "--generator-model", "m"], "must start with http://"),
        (["--prompt-template", "t.txt"], "--prompt-template needs --generator-url"),
    ],
)
def test_serve_refuses_half_a_generator_in_one_line(built, capsys, args, message):
    from deepseek_tf.serve.cli import main

    code = main(["--index", str(built), *args])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and message in err[0], err


def test_ask_help_answers_without_loading_tensorflow():
    code = (
        "import atexit, sys\n"
        "atexit.register(lambda: print('tensorflow' in sys.modules, file=sys.stderr))\n"
        "from deepseek_tf.cli.main import main\n"
        "sys.exit(main(['ask', '--help']))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and "examples:" in done.stdout and "1 per CJK character" in done.stdout
    assert done.stderr.strip() == "False"
