"""The HTTP API (FastAPI) over a `SearchService`.

Every error is JSON, `{"error": {"code": ..., "message": ...}}`, with a 4xx status for a bad
request and 5xx for a failure inside the service; no response carries a traceback (it goes to
the server's log). Request bodies are read and checked here, not by FastAPI's validation, so
each kind of bad input gets its own status and code:

  400 invalid_json            body is not JSON (or not UTF-8, or holds NaN/Infinity)
  400 rerank_unavailable      "rerank": true on a server started without --rerank
  400 reload_failed           /admin/reload could not load the index (the old one stays)
  404 not_found               unknown path
  405 method_not_allowed      e.g. GET /search
  413 body_too_large          body over --max-body-bytes
  415 unsupported_media_type  Content-Type is not application/json
  422 invalid_request         wrong field, type or value (the message names the field)
  500 internal_error          a failure inside the service
  503 shutting_down           the service is stopping
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from dataclasses import dataclass
from typing import Literal

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, ConfigDict, ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException

from deepseek_tf.errors import UserError
from deepseek_tf.serve.metrics import CONTENT_TYPE
from deepseek_tf.serve.service import SearchService, ServiceError

log = logging.getLogger("deepseek_tf.serve")
ENDPOINTS = ("/search", "/embed", "/health", "/metrics", "/admin/reload")
STATUS_CODES = {
    400: "bad_request",
    404: "not_found",
    405: "method_not_allowed",
    413: "body_too_large",
    415: "unsupported_media_type",
    422: "invalid_request",
    503: "shutting_down",
}


@dataclass(frozen=True)
class Limits:
    max_k: int = 100
    max_query_chars: int = 1000
    max_body_bytes: int = 64 * 1024
    max_embed_texts: int = 64
    max_text_chars: int = 10000


class _Strict(BaseModel):
    # strict: "10" is not an int and 1 is not a bool; forbid: a misspelt field is an error, not ignored
    model_config = ConfigDict(extra="forbid", strict=True)


class SearchBody(_Strict):
    query: str
    k: int = 10
    mode: Literal["dense", "bm25", "hybrid"] = "dense"
    rerank: bool = False


class EmbedBody(_Strict):
    texts: list[str]
    tower: Literal["query", "doc"] = "query"


class ReloadBody(_Strict):
    index: str | None = None


def error(status: int, code: str, message: str) -> JSONResponse:
    return JSONResponse({"error": {"code": code, "message": message}}, status_code=status)


def _no_constants(name: str):
    raise ValueError(f"{name} is not valid JSON")


async def read_json(request: Request, limits: Limits) -> dict:
    """The request's JSON object, or a ServiceError naming what is wrong with the body."""
    ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if ctype != "application/json":
        raise ServiceError(
            415, "unsupported_media_type", f"Content-Type must be application/json, not {ctype or 'missing'}"
        )
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limits.max_body_bytes:
        raise ServiceError(413, "body_too_large", f"body over {limits.max_body_bytes} bytes")
    body = bytearray()
    async for chunk in request.stream():  # chunked bodies have no Content-Length: count as they come
        body += chunk
        if len(body) > limits.max_body_bytes:
            raise ServiceError(413, "body_too_large", f"body over {limits.max_body_bytes} bytes")
    try:
        data = json.loads(body.decode("utf-8"), parse_constant=_no_constants)
    except UnicodeDecodeError:
        raise ServiceError(400, "invalid_json", "body is not UTF-8") from None
    except ValueError as e:
        raise ServiceError(400, "invalid_json", f"body is not valid JSON: {e}") from None
    if not isinstance(data, dict):
        raise ServiceError(422, "invalid_request", f"body must be a JSON object, not {type(data).__name__}")
    return data


def parse(model: type[_Strict], data: dict):
    try:
        return model.model_validate(data)
    except ValidationError as e:
        first = e.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "body"
        message = "unknown field" if first["type"] == "extra_forbidden" else first["msg"]
        more = f" (and {e.error_count() - 1} more)" if e.error_count() > 1 else ""
        raise ServiceError(422, "invalid_request", f"{where}: {message}{more}") from None


def check_text(text: str, limit: int, name: str) -> str:
    text = text.strip()
    if not text:
        raise ServiceError(422, "invalid_request", f"{name}: must not be empty")
    if len(text) > limit:
        raise ServiceError(422, "invalid_request", f"{name}: longer than {limit} characters ({len(text)})")
    return text


class MetricsMiddleware:
    """Counts every HTTP request by endpoint (unknown paths as "other") and status, with its latency."""

    def __init__(self, app, service: SearchService):
        self.app, self.service = app, service

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        start, status = time.perf_counter(), 500
        metrics = self.service.metrics

        async def send_status(message):
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        metrics.in_flight.inc(1)
        try:
            await self.app(scope, receive, send_status)
        finally:
            metrics.in_flight.inc(-1)
            path = scope.get("path", "")
            metrics.observe_request(path if path in ENDPOINTS else "other", status, time.perf_counter() - start)


def create_app(
    service: SearchService, limits: Limits | None = None, admin: bool = True, on_startup=None, on_shutdown=None
) -> FastAPI:
    """The FastAPI app. `on_startup` (async) runs before the first request; `on_shutdown` (sync)
    after the last one (the server closes the service there)."""
    limits = limits or Limits()
    from contextlib import asynccontextmanager

    @asynccontextmanager
    async def lifespan(app):
        if on_startup is not None:
            await on_startup()
        yield
        if on_shutdown is not None:
            await asyncio.get_running_loop().run_in_executor(None, on_shutdown)

    app = FastAPI(title="deepseek_tf search", docs_url=None, redoc_url=None, openapi_url=None, lifespan=lifespan)
    app.add_middleware(MetricsMiddleware, service=service)

    @app.exception_handler(ServiceError)
    async def _service_error(request: Request, e: ServiceError):
        return error(e.status, e.code, e.message)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, e: StarletteHTTPException):
        code = STATUS_CODES.get(e.status_code, "bad_request" if e.status_code < 500 else "internal_error")
        message = {
            404: f"no endpoint {request.url.path}",
            405: f"{request.method} is not allowed on {request.url.path}",
        }.get(e.status_code, str(e.detail))
        return error(e.status_code, code, message)

    @app.exception_handler(Exception)
    async def _internal(request: Request, e: Exception):
        log.exception("internal error on %s", request.url.path)
        return error(500, "internal_error", "internal error (details in the server log)")

    async def guarded(work):
        """Runs a request's work: a ServiceError is the client's, anything else is logged as a 500."""
        start = time.perf_counter()
        try:
            out = await work
        except ServiceError:
            raise
        except Exception:
            log.exception("internal error")
            raise ServiceError(500, "internal_error", "internal error (details in the server log)") from None
        return out, round((time.perf_counter() - start) * 1000, 3)

    @app.post("/search")
    async def search(request: Request):
        body = parse(SearchBody, await read_json(request, limits))
        query = check_text(body.query, limits.max_query_chars, "query")
        if not 1 <= body.k <= limits.max_k:
            raise ServiceError(422, "invalid_request", f"k: must be between 1 and {limits.max_k}, not {body.k}")
        out, took = await guarded(service.search(query, body.k, body.mode, body.rerank))
        # a JSONResponse skips FastAPI's per-value encoding walk: the payload is plain JSON already
        return JSONResponse({"results": out["results"], "took_ms": took, "cached": out["cached"]})

    @app.post("/embed")
    async def embed(request: Request):
        body = parse(EmbedBody, await read_json(request, limits))
        if not 1 <= len(body.texts) <= limits.max_embed_texts:
            raise ServiceError(
                422, "invalid_request", f"texts: between 1 and {limits.max_embed_texts} texts, not {len(body.texts)}"
            )
        texts = [check_text(t, limits.max_text_chars, f"texts.{i}") for i, t in enumerate(body.texts)]
        vectors, took = await guarded(service.embed(texts, body.tower))
        return JSONResponse(
            {"embeddings": vectors.tolist(), "dim": int(vectors.shape[-1]), "tower": body.tower, "took_ms": took}
        )

    @app.get("/health")
    async def health():
        return {"status": "ok", **service.describe()}

    @app.get("/metrics")
    async def metrics():
        caches = {"embedding": service.embedding_cache, "results": service.results_cache}
        return Response(service.metrics.render(caches), media_type=CONTENT_TYPE)

    if admin:

        @app.post("/admin/reload")
        async def reload(request: Request):
            data = await read_json(request, limits) if request.headers.get("content-length", "0") != "0" else {}
            body = parse(ReloadBody, data)
            try:
                described = await asyncio.get_running_loop().run_in_executor(None, service.reload, body.index)
            except UserError as e:
                raise ServiceError(400, "reload_failed", str(e)) from None
            except Exception:
                log.exception("reload failed")
                raise ServiceError(
                    500, "internal_error", "reload failed (details in the server log); the index being served stays"
                ) from None
            return {"status": "ok", **described}

    return app
