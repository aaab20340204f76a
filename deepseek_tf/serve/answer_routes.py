"""POST /answer: an answer with its sources, generated from the passages /search finds
(`deepseek_tf.answer`), on a server started with --generator-url and --generator-model.

The body is `{"question", "k", "mode", "rerank", "stream"}`; the answer
`{"answer", "citations": [{"n", "id", "title"}], "truncated", "retrieval_ms", "generation_ms", "cached"}`,
or with `"stream": true` server-sent events (`answer.flow`). Answers are cached (the service's
`answer_cache`, --cache-size entries) under the question, the passages given and the generator
settings. A generator that is unreachable or answers garbage is a 502, one too slow a 504, and
neither stops /search; the error names the generator's URL and never its key."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Literal

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, StreamingResponse
from starlette.background import BackgroundTask

from deepseek_tf.answer.flow import replay
from deepseek_tf.answer.settings import DEFAULT_K, GeneratorError
from deepseek_tf.errors import UserError
from deepseek_tf.serve.bodies import Strict, body_doc, check_text, parse, read_json
from deepseek_tf.serve.cache import MISSING
from deepseek_tf.serve.limits import Limits
from deepseek_tf.serve.service import SearchService, ServiceError

__all__ = ["AnswerBody", "add_answer_routes"]
log = logging.getLogger("deepseek_tf.serve")
EVENT_STREAM = "text/event-stream"
# proxies (nginx) hold a response back until it is whole unless told not to; events must flow as sent
STREAM_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


class AnswerBody(Strict):
    question: str
    k: int = DEFAULT_K  # passages retrieved and given to the generator
    mode: Literal["dense", "bm25", "hybrid"] = "dense"
    rerank: bool = False
    stream: bool = False


def add_answer_routes(
    app: FastAPI,
    service: SearchService,
    limits: Limits,
    guarded: Callable[[Awaitable], Awaitable[tuple[object, float]]],
) -> None:
    """Registers POST /answer on APP. `guarded` runs the retrieval (create_app's)."""
    metrics = service.metrics

    def failed(e: GeneratorError) -> None:
        metrics.answers.inc(outcome="failed")
        log.warning("answer: %s", e)  # the message names the generator's URL, never its key

    def done(key: tuple, result: dict) -> None:
        metrics.answers.inc(outcome="generated")
        service.answer_cache.put(key, result)

    async def generating(work: Awaitable):
        try:
            return await work
        except GeneratorError as e:
            failed(e)
            raise ServiceError(e.code, str(e)) from None

    @app.post("/answer", openapi_extra=body_doc(AnswerBody))
    async def answer(request: Request):
        answerer = service.answerer
        if answerer is None:
            raise ServiceError(
                "answer_unavailable",
                "POST /answer needs a generator: start the server with --generator-url URL --generator-model NAME",
            )
        body = parse(AnswerBody, await read_json(request, limits))
        question = check_text(body.question, limits.max_query_chars, "question")
        if not 1 <= body.k <= limits.max_k:
            raise ServiceError("invalid_request", f"k: must be between 1 and {limits.max_k}, not {body.k}")
        passages, retrieval_ms = await guarded(service.passages(question, body.k, body.mode, body.rerank))
        try:
            prompt = answerer.prompt(question, passages)
        except UserError as e:  # the question leaves no room for passages
            raise ServiceError("invalid_request", f"question: {e}") from None
        key = answerer.key(question, prompt)
        extra = {"retrieval_ms": retrieval_ms, "cached": False}
        cached = service.answer_cache.get(key)
        if cached is not MISSING:
            metrics.answers.inc(outcome="cached")
            result = {**cached, "generation_ms": 0.0, **extra, "cached": True}
            if body.stream:
                return StreamingResponse(replay(result), media_type=EVENT_STREAM, headers=STREAM_HEADERS)
            return JSONResponse(result)
        if body.stream:
            stream = await generating(answerer.stream(prompt))
            events = stream.events(extra, lambda result: done(key, result), failed)
            # closed by the events when they run to the end or are cancelled, and here when a client
            # gone before the first event leaves them never started (the generator's turn comes back)
            closing = BackgroundTask(stream.aclose)
            return StreamingResponse(events, media_type=EVENT_STREAM, headers=STREAM_HEADERS, background=closing)
        result = await generating(answerer.answer(prompt))
        done(key, result)
        return JSONResponse({**result, **extra})
