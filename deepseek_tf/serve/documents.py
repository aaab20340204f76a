"""Writes to the index being served (`index.live`): the documents routes.

  POST   /documents        {"documents": [{"_id", "title", "text", any other field}, ...]}: upsert
  DELETE /documents/{id}   remove one document

Both answer once the write is in the index's update log (fsynced) and visible to every search:
`{"upserted": n | "deleted": [id], "seq": log position, "documents": count}`. They are admin
endpoints: off with `--no-admin`, and with an API key they need `Authorization: Bearer KEY`.

When the index's model reads image vectors, a document may carry `"image_embedding": [floats]`
(the model's image_dim of them); one without it reads the model's placeholder, counted in the
answer's `without_image`. A bad vector (wrong length, not numbers) refuses the whole request with
`invalid_request`, naming `documents.{i}`, the id and the field; nothing is written (a number out of
a float's range is refused with the body, as `invalid_json`).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from deepseek_tf.serve.bodies import Strict, parse, read_json
from deepseek_tf.serve.limits import Limits
from deepseek_tf.serve.service import SearchService, ServiceError

PATHS = ("/documents",)


class DocumentsBody(Strict):
    documents: list[dict]


def check_documents(docs: list[dict], limits: Limits) -> None:
    """The per-request limits /embed has, on the documents' texts (the model reads each one)."""
    if not 1 <= len(docs) <= limits.max_embed_texts:
        raise ServiceError(
            "invalid_request", f"documents: between 1 and {limits.max_embed_texts} documents, not {len(docs)}"
        )
    total = 0
    for i, doc in enumerate(docs):
        size = sum(len(v) for k in ("title", "text") if isinstance(v := doc.get(k), str))
        if size > limits.max_text_chars:
            raise ServiceError("invalid_request", f"documents.{i}: longer than {limits.max_text_chars} characters")
        total += size
    if total > limits.max_embed_chars:
        raise ServiceError(
            "invalid_request", f"documents: {total} characters in all, over the {limits.max_embed_chars} allowed"
        )


def add_document_routes(
    app: FastAPI,
    service: SearchService,
    limits: Limits,
    guarded: Callable[[Awaitable], Awaitable[tuple[dict, float]]],
    authorize: Callable[[Request], None],
) -> None:
    """Registers POST /documents and DELETE /documents/{id} on APP."""

    @app.post("/documents")
    async def upsert(request: Request):
        authorize(request)  # before the body is read
        body = parse(DocumentsBody, await read_json(request, limits))
        check_documents(body.documents, limits)
        out, took = await guarded(service.write("upsert", body.documents))
        return JSONResponse({**out, "took_ms": took})

    @app.delete("/documents/{doc_id}")
    async def delete(doc_id: str, request: Request):
        authorize(request)
        out, took = await guarded(service.write("delete", [doc_id]))
        if not out["deleted"]:
            raise ServiceError("not_found", f"no document {doc_id!r} in the index")
        return JSONResponse({**out, "took_ms": took})
