"""`GET /`: one static HTML page (`static/index.html`) that runs a query in two modes side by side.

The page is plain HTML, CSS and JavaScript in one file, with nothing loaded from elsewhere; it
talks to `POST /search` and `GET /health` of the server that served it. It is read once, when the
routes are added, and served with a Content-Security-Policy that allows only its own inline script
and style (by their SHA-256) and requests to this origin."""

from __future__ import annotations

import base64
import hashlib
import re
from importlib import resources

from fastapi import FastAPI
from fastapi.responses import Response

__all__ = ["add_page_routes", "content_security_policy", "page_html"]

_INLINE = re.compile(rb"<(script|style)>(.*?)</\1>", re.S)


def page_html() -> bytes:
    """The page's bytes, from the package data."""
    return resources.files("deepseek_tf.serve").joinpath("static", "index.html").read_bytes()


def content_security_policy(html: bytes) -> str:
    """A policy for HTML that allows its inline `<script>` and `<style>` blocks and nothing else
    but fetches to the same origin."""
    hashes: dict[str, list[str]] = {"script": [], "style": []}
    for kind, body in _INLINE.findall(html):
        digest = base64.b64encode(hashlib.sha256(body).digest()).decode("ascii")
        hashes[kind.decode()].append(f"'sha256-{digest}'")
    script, style = (" ".join(hashes[kind]) or "'none'" for kind in ("script", "style"))
    return "; ".join(
        [
            "default-src 'none'",
            f"script-src {script}",
            f"style-src {style}",
            "connect-src 'self'",
            "img-src 'self' data:",
            "base-uri 'none'",
            "form-action 'none'",
            "frame-ancestors 'none'",
        ]
    )


def add_page_routes(app: FastAPI) -> None:
    """Registers `GET /` and `HEAD /` on APP, serving the page read now."""
    html = page_html()
    headers = {
        "Content-Security-Policy": content_security_policy(html),
        "X-Content-Type-Options": "nosniff",
        "Cache-Control": "no-cache",
    }

    @app.api_route("/", methods=["GET", "HEAD"], include_in_schema=False)
    async def page():
        return Response(html, media_type="text/html; charset=utf-8", headers=headers)
