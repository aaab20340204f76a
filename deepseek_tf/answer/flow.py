"""An answer from retrieved passages: the prompt (`prompt`), the generator's text (`generator`)
and the passages it cites (`citations`), whole or as server-sent events.

An answer is `{"answer", "citations": [{"n", "id", "title"}], "truncated", "generation_ms"}`
(the caller adds how long retrieval took and whether it came from a cache). Streamed, the
generator's chat-completion chunks are passed on as they arrive (`data: {...}`), and the stream
ends with one `event: citations` whose data is the whole answer as JSON; a failure once the
stream has begun ends it with `event: error` and `{"error": {"code", "message"}}` instead."""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import AsyncIterator, Callable

from deepseek_tf.answer.citations import citations
from deepseek_tf.answer.generator import Generator, GeneratorStream
from deepseek_tf.answer.prompt import Passage, Prompt, build_prompt, load_template
from deepseek_tf.answer.settings import GeneratorError, GeneratorSettings


def sse(data: dict | str, event: str | None = None) -> bytes:
    """One server-sent event: DATA (a dict as JSON, a str as it is), under EVENT's name if given."""
    text = data if isinstance(data, str) else json.dumps(data, ensure_ascii=False)
    return (f"event: {event}\n" if event else "").encode() + f"data: {text}\n\n".encode()


def _ms(start: float) -> float:
    return round((time.perf_counter() - start) * 1000, 3)


class Answerer:
    """Answers over one generator, with a prompt template's text (`prompt.load_template`; default:
    the one shipped with the package). `on_call`: see `generator.Generator`."""

    def __init__(
        self,
        settings: GeneratorSettings,
        template: str | None = None,
        on_call: Callable[[str, float], None] | None = None,
    ):
        self.settings, self.template = settings, load_template() if template is None else template
        self.generator = Generator(settings, on_call)

    def prompt(self, question: str, passages: list[Passage]) -> Prompt:
        return build_prompt(question, passages, self.template, self.settings.budget)

    def key(self, question: str, prompt: Prompt) -> tuple:
        """What an answer is cached under: the question, the passages given (ids, and texts through
        the prompt's digest) and the generator settings (URL, model, template, budget)."""
        s = self.settings
        digest = hashlib.sha256(self.template.encode() + b"\0" + prompt.text.encode()).hexdigest()
        return (s.url, s.model, s.context, s.max_tokens, question, tuple(p.id for p in prompt.passages), digest)

    def result(self, prompt: Prompt, text: str, start: float) -> dict:
        return {
            "answer": text,
            "citations": citations(text, prompt.passages),
            "truncated": prompt.truncated,
            "generation_ms": _ms(start),
        }

    @staticmethod
    def _messages(prompt: Prompt) -> list[dict]:
        return [{"role": "user", "content": prompt.text}]

    async def answer(self, prompt: Prompt) -> dict:
        """The answer to PROMPT; a GeneratorError when the generator gives none."""
        start = time.perf_counter()
        return self.result(prompt, await self.generator.complete(self._messages(prompt)), start)

    async def stream(self, prompt: Prompt) -> AnswerStream:
        """The answer to PROMPT as events, the generator's stream already open (a GeneratorError
        here, before any event, when it cannot be)."""
        start = time.perf_counter()
        return AnswerStream(self, prompt, await self.generator.stream(self._messages(prompt)), start)

    async def aclose(self) -> None:
        await self.generator.aclose()


class AnswerStream:
    """An answer being generated: its `events()`, then `aclose()` (safe to call twice) gives the
    generator's turn back, whether or not the events were read."""

    def __init__(self, answerer: Answerer, prompt: Prompt, stream: GeneratorStream, start: float):
        self.answerer, self.prompt, self.stream, self.start = answerer, prompt, stream, start

    async def events(
        self,
        extra: dict,
        on_done: Callable[[dict], None] | None = None,
        on_failed: Callable[[GeneratorError], None] | None = None,
    ) -> AsyncIterator[bytes]:
        """The generator's chunks, then the `citations` event: the answer with EXTRA's fields.
        ON_DONE gets the answer (without EXTRA) once the generator has finished; ON_FAILED the
        error that ended the stream instead."""
        parts = []
        try:
            async for data, text in self.stream.events():
                parts.append(text)
                yield sse(data)
        except GeneratorError as e:
            if on_failed is not None:
                on_failed(e)
            yield sse({"error": {"code": e.code, "message": str(e)}}, "error")
            return
        finally:
            await self.aclose()
        result = self.answerer.result(self.prompt, "".join(parts), self.start)
        if on_done is not None:
            on_done(result)
        yield sse({**result, **extra}, "citations")

    async def aclose(self) -> None:
        await self.stream.aclose()


async def replay(result: dict) -> AsyncIterator[bytes]:
    """A finished (cached) answer as the events a stream of it would end with: its whole text in
    one chat-completion chunk, then the `citations` event."""
    chunk = {"object": "chat.completion.chunk", "choices": [{"index": 0, "delta": {"content": result["answer"]}}]}
    yield sse(chunk)
    yield sse(result, "citations")
