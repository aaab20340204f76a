"""Reading a request's body: JSON checked before it is parsed (size, nesting, UTF-8, duplicate keys,
lone surrogates), then a strict pydantic model; every failure a `ServiceError` naming what is wrong."""

from __future__ import annotations

import json
import re
from itertools import accumulate

from fastapi import Request
from pydantic import BaseModel, ConfigDict, ValidationError
from starlette.requests import ClientDisconnect

from deepseek_tf.data.beir import loads_strict, normalize_text
from deepseek_tf.serve.errors import ServiceError
from deepseek_tf.serve.limits import Limits

__all__ = ["Strict", "body_doc", "check_text", "check_texts", "has_body", "json_depth", "parse", "read_json"]


class Strict(BaseModel):
    # strict: "10" is not an int and 1 is not a bool; forbid: a misspelt field is an error, not ignored
    model_config = ConfigDict(extra="forbid", strict=True)


class _DuplicateKey(ValueError):
    pass


def _unique_keys(pairs: list[tuple[str, object]]) -> dict:
    # json.loads keeps the last of two equal keys: {"k": "ten", "k": 2} would pass as k=2
    obj = dict(pairs)
    if len(obj) != len(pairs):
        seen: set = set()
        key = next(k for k, _ in pairs if k in seen or seen.add(k))
        raise _DuplicateKey(f"key {json.dumps(key)} appears twice")
    return obj


_STRING = re.compile(rb'"(?:[^"\\]|\\.)*"')
_NOT_BRACKET = bytes(b for b in range(256) if b not in b"[]{}")
_STEP = [0] * 256
_STEP[ord("[")] = _STEP[ord("{")] = 1
_STEP[ord("]")] = _STEP[ord("}")] = -1


def json_depth(body: bytes, limit: int) -> int:
    """How deep arrays and objects nest in BODY (brackets inside strings not counted), measured
    without parsing: the parser recurses per level and a deep enough body exhausts the stack.
    Only a body with more than LIMIT opening brackets is scanned (the bodies served have two)."""
    if body.count(b"[") + body.count(b"{") <= limit:
        return 0
    brackets = _STRING.sub(b"", body).translate(None, _NOT_BRACKET)
    return max(accumulate(_STEP[b] for b in brackets), default=0)


def _check_unicode(value, where: str) -> None:
    """A lone surrogate ("\\ud800") is valid JSON but no text: refused here, not in the tokenizer."""
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            raise ServiceError("invalid_request", f"{where}: not valid Unicode (a lone surrogate)") from None
    elif isinstance(value, dict):
        for key, item in value.items():
            _check_unicode(key, f"{where}: a field name")
            _check_unicode(item, key if where == "body" else f"{where}.{key}")
    elif isinstance(value, list):
        for i, item in enumerate(value):
            _check_unicode(item, f"{where}.{i}")


def has_body(scope: dict) -> bool:
    """Whether the request carries a body (a non-zero Content-Length, or chunked)."""
    for name, value in scope.get("headers", ()):
        if name == b"transfer-encoding" or (name == b"content-length" and value.strip() != b"0"):
            return True
    return False


async def read_json(request: Request, limits: Limits) -> dict:
    """The request's JSON object, or a ServiceError naming what is wrong with the body."""
    ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if ctype != "application/json":
        shown = json.dumps(ctype[:50]) if ctype else "missing"
        raise ServiceError("unsupported_media_type", f"Content-Type must be application/json, not {shown}")
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limits.max_body_bytes:
        raise ServiceError("body_too_large", f"body over {limits.max_body_bytes} bytes")
    body = bytearray()
    try:
        async for chunk in request.stream():  # chunked bodies have no Content-Length: count as they come
            body += chunk
            if len(body) > limits.max_body_bytes:
                raise ServiceError("body_too_large", f"body over {limits.max_body_bytes} bytes")
    except ClientDisconnect:
        raise ServiceError("client_closed_request", "the client hung up before its body was read") from None
    body = bytes(body)
    if json_depth(body, limits.max_json_depth) > limits.max_json_depth:
        raise ServiceError("invalid_json", f"body nests arrays or objects more than {limits.max_json_depth} deep")
    try:
        data = loads_strict(body.decode("utf-8"), object_pairs_hook=_unique_keys)
    except UnicodeDecodeError:
        raise ServiceError("invalid_json", "body is not UTF-8") from None
    except ValueError as e:
        raise ServiceError("invalid_json", f"body is not valid JSON: {e}") from None
    if b"\\u" in body:  # only an escape can make a lone surrogate: UTF-8 input cannot hold one
        _check_unicode(data, "body")
    if not isinstance(data, dict):
        raise ServiceError("invalid_request", f"body must be a JSON object, not {type(data).__name__}")
    return data


def parse(model: type[Strict], data: dict):
    try:
        return model.model_validate(data)
    except ValidationError as e:
        first = e.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "body"
        message = "unknown field" if first["type"] == "extra_forbidden" else first["msg"]
        more = f" (and {e.error_count() - 1} more)" if e.error_count() > 1 else ""
        raise ServiceError("invalid_request", f"{where}: {message}{more}") from None


def check_text(text: str, limit: int, name: str) -> str:
    text = text.strip()
    if not normalize_text(text):  # empty, or only spaces and control characters: nothing to search for
        raise ServiceError("invalid_request", f"{name}: must not be empty (or only control characters)")
    if len(text) > limit:
        raise ServiceError("invalid_request", f"{name}: longer than {limit} characters ({len(text)})")
    return text


def body_doc(model: type[Strict]) -> dict:
    # the bodies are read by read_json, not by FastAPI: /docs learns their shape from here
    schema = model.model_json_schema()
    return {"requestBody": {"required": True, "content": {"application/json": {"schema": schema}}}}


def check_texts(texts: list[str], limits: Limits, name: str) -> list[str]:
    """/embed's limits on a list of texts: how many, the characters of each and of all together."""
    if not 1 <= len(texts) <= limits.max_embed_texts:
        raise ServiceError("invalid_request", f"{name}: between 1 and {limits.max_embed_texts} texts, not {len(texts)}")
    texts = [check_text(t, limits.max_text_chars, f"{name}.{i}") for i, t in enumerate(texts)]
    total = sum(map(len, texts))
    if total > limits.max_embed_chars:  # the model's work grows with the characters it reads
        raise ServiceError(
            "invalid_request",
            f"{name}: {total} characters in all, over the {limits.max_embed_chars} one request may hold",
        )
    return texts
