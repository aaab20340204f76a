"""The HTTP API (FastAPI) over a `SearchService`.

Every error is JSON, `{"error": {"code": ..., "message": ...}}`, with the status that
`service.ERRORS` gives its code; no response carries a traceback or a server path (they go to
the server's log). Request bodies are read and checked here, not by FastAPI's validation, so
each kind of bad input gets its own status and code:

  400 invalid_json            body is not JSON (not UTF-8, NaN/Infinity, a key twice, nested too deep)
  400 rerank_unavailable      "rerank": true on a server started without --rerank
  400 reload_failed           /admin/reload could not load the index (the old one stays)
  401 unauthorized            an admin endpoint without the API key (`Authorization: Bearer KEY`)
  403 forbidden               /admin/reload of a path outside --index-root
  404 not_found               unknown path
  405 method_not_allowed      e.g. GET /search
  408 request_timeout         the request did not arrive within --read-timeout (`serve.protocol`)
  413 body_too_large          body over --max-body-bytes
  415 unsupported_media_type  Content-Type is not application/json
  422 invalid_request         wrong field, type or value (the message names the field)
  500 internal_error          a failure inside the service
  501 answer_unavailable      POST /answer on a server started without --generator-url
  502 generator_failed        /answer's generator is unreachable, refused, or answered no chat completion
  503 shutting_down           the service is stopping
  503 overloaded              --max-connections reached with every connection busy (`serve.protocol`)
  503 generator_busy          --generator-concurrency answers in progress, none done within --generator-timeout
  504 generator_timeout       /answer's generator took over --generator-timeout

An answer sent before the request's body was read to its end says `Connection: close` and the
connection is closed after it; any other answer leaves the connection usable for the next request.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from pathlib import Path
from typing import Literal

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from pydantic import Field
from starlette.exceptions import HTTPException as StarletteHTTPException

from deepseek_tf.errors import UserError
from deepseek_tf.serve import compat
from deepseek_tf.serve.answer_routes import add_answer_routes
from deepseek_tf.serve.auth import bearer_matches
from deepseek_tf.serve.bodies import Strict, body_doc, check_text, check_texts, has_body, parse, read_json
from deepseek_tf.serve.documents import add_document_routes
from deepseek_tf.serve.limits import Limits
from deepseek_tf.serve.metrics import CONTENT_TYPE
from deepseek_tf.serve.page import add_page_routes
from deepseek_tf.serve.service import ERRORS, SearchService, ServiceError, error_body, public_name

__all__ = ["Limits", "create_app", "error", "read_json"]

log = logging.getLogger("deepseek_tf.serve")
ENDPOINTS = (
    "/",
    "/search",
    "/embed",
    "/health",
    "/metrics",
    "/admin/reload",
    "/docs",
    "/openapi.json",
    "/documents",
    "/answer",
    *compat.PATHS,
)
# the code of an error that Starlette raises (routing) rather than the service
STATUS_CODES = {status: code for code, status in reversed(ERRORS.items())}
INTERNAL = "internal error (details in the server log)"


class SearchBody(Strict):
    query: str
    k: int = 10
    mode: Literal["dense", "bm25", "hybrid"] = "dense"
    rerank: bool = False
    # W: order the reranked candidates by W·z(cross-encoder) + (1 − W)·z(retriever); needs rerank
    rerank_fusion: float | None = Field(None, ge=0.0, le=1.0)
    filter: dict | None = None  # index.filters: {"brand": "apple", "price": {"lt": 3000}, ...}
    fields: list[str] | None = None  # stored fields each result carries (default: all; []: none)


class EmbedBody(Strict):
    texts: list[str]
    tower: Literal["query", "doc"] = "query"


class ReloadBody(Strict):
    index: str | None = None


def error(code: str, message: str, headers: dict | None = None) -> Response:
    # error_body escapes non-ASCII: a message quoting the client's text cannot fail to encode
    return Response(error_body(code, message), ERRORS[code], headers, media_type="application/json")


class RequestGuard:
    """The outermost layer of the app, around every HTTP request:

    - counts it by endpoint (unknown paths as "other") and status, with its latency;
    - answers a failure that nothing else caught with the JSON 500 (logged once, with its
      traceback) instead of letting it reach uvicorn, which would drop the connection unannounced;
    - adds `Connection: close` to an answer sent before the request's body was read to its end
      (a refused body, a timeout, a client gone): what remains of that body would otherwise be
      read as the start of the next request, or keep the connection waiting for it."""

    def __init__(self, app, service: SearchService):
        self.app, self.service = app, service

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        start, status, started = time.perf_counter(), 500, False
        body_read = not has_body(scope)
        metrics = self.service.metrics

        async def receive_tracked():
            nonlocal body_read
            message = await receive()
            if message["type"] == "http.request" and not message.get("more_body", False):
                body_read = True
            return message

        async def send_tracked(message):
            nonlocal status, started
            if message["type"] == "http.response.start":
                started, status = True, message["status"]
                if not body_read:
                    message = {**message, "headers": [*message.get("headers", ()), (b"connection", b"close")]}
            await send(message)

        metrics.in_flight.inc(1)
        try:
            await self.app(scope, receive_tracked, send_tracked)
        except Exception:
            log.exception("internal error on %s %s", scope.get("method"), scope.get("path"))
            if not started:  # else the answer was cut short: uvicorn closes the connection
                await error("internal_error", INTERNAL)(scope, receive_tracked, send_tracked)
        finally:
            metrics.in_flight.inc(-1)
            path = scope.get("path", "")
            metrics.observe_request(path if path in ENDPOINTS else "other", status, time.perf_counter() - start)


def confine(root: Path, given: str) -> Path:
    """GIVEN (absolute, or relative to ROOT) resolved, symbolic links followed, if it lies under
    ROOT; else a 403 that says the same whether or not the path exists."""
    try:
        target = (root / given).resolve()
    except (OSError, ValueError, RuntimeError):  # a NUL byte, a symlink loop, a name too long
        target = None
    if target is None or not target.is_relative_to(root):
        raise ServiceError("forbidden", "index: must name a directory under the server's index root")
    return target


def create_app(
    service: SearchService,
    limits: Limits | None = None,
    admin: bool = True,
    on_startup=None,
    on_shutdown=None,
    api_key: str | None = None,
    index_root: str | Path | None = None,
) -> FastAPI:
    """The FastAPI app. `on_startup` (async) runs before the first request; `on_shutdown` (sync)
    after the last one (the server closes the service there). With `api_key`, admin endpoints
    need `Authorization: Bearer API_KEY`. `/admin/reload` loads only indexes under `index_root`
    (default: the directory holding the index being served)."""
    limits = limits or Limits()
    if index_root is None and service.path is not None:
        index_root = service.path.resolve().parent
    root = Path(index_root).resolve() if index_root is not None else None
    from contextlib import asynccontextmanager

    @asynccontextmanager
    async def lifespan(app):
        if on_startup is not None:
            await on_startup()
        yield
        if service.answerer is not None:  # its connections to the generator
            await service.answerer.aclose()
        if on_shutdown is not None:
            await asyncio.get_running_loop().run_in_executor(None, on_shutdown)

    # /docs and /openapi.json describe the API and change nothing: served on every host
    app = FastAPI(
        title="deepseek_tf search", docs_url="/docs", redoc_url=None, openapi_url="/openapi.json", lifespan=lifespan
    )
    app.add_middleware(RequestGuard, service=service)
    add_page_routes(app)  # GET /: a page showing two modes' results side by side

    @app.exception_handler(ServiceError)
    async def _service_error(request: Request, e: ServiceError):
        headers = {"WWW-Authenticate": "Bearer"} if e.code == "unauthorized" else None
        if e.code == "client_closed_request":  # nobody to answer: one line, no traceback
            log.info("%s %s: %s", request.method, request.url.path, e.message)
        return error(e.code, e.message, headers)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, e: StarletteHTTPException):
        code = STATUS_CODES.get(e.status_code, "bad_request" if e.status_code < 500 else "internal_error")
        message = {
            404: f"no endpoint {request.url.path}",
            405: f"{request.method} is not allowed on {request.url.path}",
        }.get(e.status_code, str(e.detail))
        return error(code, message)

    async def guarded(work):
        """Runs a request's work: a ServiceError is the client's, anything else is logged as a 500."""
        start = time.perf_counter()
        try:
            out = await work
        except ServiceError:
            raise
        except Exception:
            log.exception("internal error")
            raise ServiceError("internal_error", INTERNAL) from None
        return out, round((time.perf_counter() - start) * 1000, 3)

    @app.post("/search", openapi_extra=body_doc(SearchBody))
    async def search(request: Request):
        body = parse(SearchBody, await read_json(request, limits))
        query = check_text(body.query, limits.max_query_chars, "query")
        if not 1 <= body.k <= limits.max_k:
            raise ServiceError("invalid_request", f"k: must be between 1 and {limits.max_k}, not {body.k}")
        if body.rerank_fusion is not None and not body.rerank:
            raise ServiceError("invalid_request", 'rerank_fusion: needs "rerank": true')
        out, took = await guarded(
            service.search(query, body.k, body.mode, body.rerank, body.rerank_fusion, body.filter, body.fields)
        )
        # a JSONResponse skips FastAPI's per-value encoding walk: the payload is plain JSON already
        return JSONResponse({"results": out["results"], "took_ms": took, "cached": out["cached"]})

    @app.post("/embed", openapi_extra=body_doc(EmbedBody))
    async def embed(request: Request):
        body = parse(EmbedBody, await read_json(request, limits))
        texts = check_texts(body.texts, limits, "texts")
        vectors, took = await guarded(service.embed(texts, body.tower))
        return JSONResponse(
            {"embeddings": vectors.tolist(), "dim": int(vectors.shape[-1]), "tower": body.tower, "took_ms": took}
        )

    @app.api_route("/health", methods=["GET", "HEAD"])
    async def health():
        return JSONResponse({"status": "ok", **service.describe()})

    @app.api_route("/metrics", methods=["GET", "HEAD"])
    async def metrics():
        caches = {"embedding": service.embedding_cache, "results": service.results_cache}
        if service.answerer is not None:
            caches["answers"] = service.answer_cache
        return Response(service.metrics.render(caches), media_type=CONTENT_TYPE)

    compat.add_compat_routes(app, service, limits, guarded)  # OpenAI's, TEI's APIs
    add_answer_routes(app, service, limits, guarded)  # answers with sources, through a generator

    def authorize(request: Request) -> None:
        if api_key is not None and not bearer_matches(request.headers.get("authorization"), api_key):
            raise ServiceError("unauthorized", "this endpoint needs the server's API key: Authorization: Bearer KEY")

    if admin:
        add_document_routes(app, service, limits, guarded, authorize)  # writes: upsert, delete

        @app.post("/admin/reload", openapi_extra=body_doc(ReloadBody))
        async def reload(request: Request):
            authorize(request)  # before the body is read: nothing of an unauthorized client's is parsed
            body = parse(ReloadBody, await read_json(request, limits) if has_body(request.scope) else {})
            target, shown = None, public_name(service.path) or ""
            if body.index is not None:
                if root is None:
                    raise ServiceError("forbidden", "index: this server has no index root to load from")
                target = confine(root, body.index)
                shown = str(target.relative_to(root))
            try:
                described = await asyncio.get_running_loop().run_in_executor(None, service.reload, target)
            except UserError as e:  # the reason may quote server paths or file contents: the log keeps it
                log.warning("reload of %s failed, still serving the previous index: %s", target or service.path, e)
                raise ServiceError(
                    "reload_failed", f"could not load index {json.dumps(shown)} (details in the server log)"
                ) from None
            except Exception:
                log.exception("reload failed")
                raise ServiceError(
                    "internal_error", "reload failed (details in the server log); the index being served stays"
                ) from None
            return JSONResponse({"status": "ok", **described})

    return app
