"""The client of an OpenAI-compatible chat-completions endpoint (`POST {URL}/v1/chat/completions`:
DeepSeek's API, vLLM, Ollama, llama.cpp's server), for the prompts of answers.

- The API key is read from an environment variable (`api_key_env`) and sent as
  `Authorization: Bearer KEY`; it is in no message, log line or error (a server's error text that
  quotes it has it replaced by `***`), and a URL's `user:password@` is left out of them too.
- At most `concurrency` calls at once; a call that waits `timeout` seconds for a turn fails as
  "busy".
- A call fails as "timeout" when the whole answer (streamed: the response's start, or the gap
  between two of its events) takes over `timeout` seconds, and is not retried: a slow generator
  would only be slow again.
- Connection errors, HTTP 429 and 5xx are retried `retries` times, after `backoff` seconds, then
  twice that, and so on. Any other status, or an answer that is not a chat completion, fails
  at once.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import re
import time
from collections.abc import AsyncIterator, Callable

import httpx

from deepseek_tf.answer.settings import GeneratorError, GeneratorSettings
from deepseek_tf.errors import UserError

SNIPPET_CHARS = 200  # of a generator's error or garbage answer, quoted in the error
log = logging.getLogger("deepseek_tf.answer")


def chat_url(url: str) -> str:
    """The chat-completions endpoint of a base URL given with or without /v1 (or the endpoint itself)."""
    base = url.rstrip("/").removesuffix("/chat/completions").removesuffix("/v1")
    return base + "/v1/chat/completions"


def public_url(url: str) -> str:
    """URL as messages show it: without a `user:password@` part."""
    return re.sub(r"(?<=//)[^/@]*@", "", url)


def _message(answer: dict) -> object:
    return answer["choices"][0]["message"]["content"]


def _delta(chunk: dict) -> object:
    choices = chunk["choices"]
    return (choices[0]["delta"].get("content") or "") if choices else ""  # [] in a final usage chunk


class Generator:
    """Calls to one generator. `on_call(outcome, seconds)` sees every HTTP attempt: "ok", or why it
    failed ("timeout", "unreachable", "status", "bad_response", "busy")."""

    def __init__(self, settings: GeneratorSettings, on_call: Callable[[str, float], None] | None = None):
        if not settings.url or not settings.model:
            raise UserError("a generator needs --generator-url and --generator-model", exit_code=2)
        self.settings, self.on_call = settings, on_call
        self.url, self.shown = chat_url(settings.url), public_url(settings.url.rstrip("/"))
        self._key = os.environ.get(settings.api_key_env, "").strip() if settings.api_key_env else ""
        self._slots = asyncio.Semaphore(settings.concurrency)
        self._client: httpx.AsyncClient | None = None

    @property
    def client(self) -> httpx.AsyncClient:
        # made in the event loop that uses it (the server's, or `ask`'s asyncio.run)
        if self._client is None:
            headers = {"Authorization": f"Bearer {self._key}"} if self._key else {}
            self._client = httpx.AsyncClient(headers=headers, timeout=httpx.Timeout(self.settings.timeout))
        return self._client

    async def aclose(self) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    def _snippet(self, text: str) -> str:
        text = " ".join(text.split())
        if self._key:
            text = text.replace(self._key, "***")
        return text[:SNIPPET_CHARS] + ("…" if len(text) > SNIPPET_CHARS else "")

    def failed(self, outcome: str, message: str, seconds: float) -> GeneratorError:
        """The error of a failed attempt, counted and logged (the message holds no key). At INFO: the
        caller says what became of the answer (a server logs it, a command prints it)."""
        self.observe(outcome, seconds)
        log.info("%s", message)
        return GeneratorError(f"generator_{outcome if outcome in ('timeout', 'busy') else 'failed'}", message)

    def observe(self, outcome: str, seconds: float) -> None:
        if self.on_call is not None:
            self.on_call(outcome, seconds)

    def text_of(self, raw: str, pick: Callable[[dict], object], what: str, start: float) -> str:
        """PICK's text from RAW (a JSON answer of the generator's); else the "bad_response" error,
        saying that the generator WHAT and quoting RAW."""
        try:
            text = pick(json.loads(raw))
        except (ValueError, KeyError, IndexError, TypeError, AttributeError):
            text = None
        if not isinstance(text, str):
            message = f"the generator at {self.shown} {what}: {self._snippet(raw) or '(empty)'}"
            raise self.failed("bad_response", message, time.perf_counter() - start)
        return text

    def release(self) -> None:
        """Gives back a turn that `_turn` took."""
        self._slots.release()

    def _body(self, messages: list[dict], stream: bool) -> dict:
        s = self.settings
        return {"model": s.model, "messages": messages, "max_tokens": s.max_tokens, "stream": stream}

    async def _turn(self) -> None:
        """Waits for one of the `concurrency` turns (given back with `release`)."""
        start = time.perf_counter()
        try:
            await asyncio.wait_for(self._slots.acquire(), self.settings.timeout)
        except asyncio.TimeoutError:
            raise self.failed(
                "busy",
                f"{self.settings.concurrency} answers are being generated by {self.shown} and none finished "
                f"within {self.settings.timeout:g} s",
                time.perf_counter() - start,
            ) from None

    async def _post(self, body: dict, stream: bool) -> tuple[httpx.Response, float]:
        """The 2xx answer to BODY (its content unread when STREAM) and when its attempt started,
        after the retries the module's docstring describes."""
        s, error = self.settings, None
        for attempt in range(s.retries + 1):
            if attempt:
                await asyncio.sleep(s.backoff * 2 ** (attempt - 1))
            start = time.perf_counter()
            try:
                response = await asyncio.wait_for(
                    self.client.send(self.client.build_request("POST", self.url, json=body), stream=stream), s.timeout
                )
            except httpx.ConnectTimeout:
                error = self.failed("unreachable", f"cannot connect to the generator at {self.shown}", s.timeout)
                continue
            except (asyncio.TimeoutError, httpx.TimeoutException):
                took = time.perf_counter() - start
                raise self.failed(
                    "timeout", f"the generator at {self.shown} did not answer within {s.timeout:g} s", took
                ) from None
            except httpx.HTTPError as e:
                took = time.perf_counter() - start
                error = self.failed(
                    "unreachable", f"cannot reach the generator at {self.shown} ({type(e).__name__})", took
                )
                continue
            if response.is_success:
                return response, start
            try:
                text = (await asyncio.wait_for(response.aread(), s.timeout)).decode("utf-8", "replace")
            except (asyncio.TimeoutError, httpx.HTTPError):
                text = ""
            finally:
                await response.aclose()
            code = response.status_code
            error = self.failed(
                "status",
                f"the generator at {self.shown} answered HTTP {code}: {self._snippet(text) or '(no body)'}",
                time.perf_counter() - start,
            )
            if code != 429 and code < 500:  # the request itself is refused (a bad key, an unknown model)
                break
        raise error

    async def complete(self, messages: list[dict]) -> str:
        """The generator's answer to MESSAGES (`choices[0].message.content`)."""
        await self._turn()
        try:
            response, start = await self._post(self._body(messages, False), stream=False)
            content = self.text_of(response.text, _message, "answered something that is not a chat completion", start)
            self.observe("ok", time.perf_counter() - start)
            return content
        finally:
            self.release()

    async def stream(self, messages: list[dict]) -> GeneratorStream:
        """The generator's server-sent events for MESSAGES, the connection open and its status
        checked (retried as `complete` is); read them with `events()`, then `aclose()`."""
        await self._turn()
        try:
            response, start = await self._post(self._body(messages, True), stream=True)
            kind = response.headers.get("content-type", "").split(";")[0].strip()
            if kind != "text/event-stream":
                await response.aclose()
                raise self.failed(
                    "bad_response",
                    f"the generator at {self.shown} answered {kind or 'no Content-Type'}, not an event stream",
                    time.perf_counter() - start,
                )
        except BaseException:
            self.release()
            raise
        return GeneratorStream(self, response, start)


class GeneratorStream:
    """A streamed answer, its response open and its turn held until `aclose()` (safe twice)."""

    def __init__(self, generator: Generator, response: httpx.Response, start: float):
        self.generator, self.response, self.start = generator, response, start
        self._open = True

    async def events(self) -> AsyncIterator[tuple[str, str]]:
        """(data, text) of each chat-completion chunk as it arrives, until `[DONE]` or the end of
        the stream: `data` as the generator sent it, `text` what it adds to the answer."""
        g = self.generator
        try:
            async for line in self.response.aiter_lines():
                if not line.startswith("data:"):  # comments, event names, the blank line after each event
                    continue
                data = line[5:].strip()
                if data == "[DONE]":
                    break
                yield data, g.text_of(data, _delta, "sent an event that is not a chat-completion chunk", self.start)
        except httpx.TimeoutException:
            raise g.failed(
                "timeout",
                f"the generator at {g.shown} sent nothing for {g.settings.timeout:g} s mid-answer",
                time.perf_counter() - self.start,
            ) from None
        except httpx.HTTPError as e:
            raise g.failed(
                "unreachable",
                f"the generator at {g.shown} broke off its answer ({type(e).__name__})",
                time.perf_counter() - self.start,
            ) from None
        g.observe("ok", time.perf_counter() - self.start)

    async def aclose(self) -> None:
        if self._open:
            self._open = False
            try:
                await self.response.aclose()
            finally:
                self.generator.release()
