"""What a generator is and how it is asked (`GeneratorSettings`), and the error of a generator that
gives no answer: importable without the HTTP client (`generator`), which the `serve` extra installs."""

from __future__ import annotations

from dataclasses import dataclass

from deepseek_tf.errors import UserError

API_KEY_ENV = "DEEPSEEK_TF_GENERATOR_API_KEY"
DEFAULT_K = 5  # passages retrieved for a question and given to the generator


@dataclass(frozen=True)
class GeneratorSettings:
    url: str | None = None  # the server's base URL (with or without /v1)
    model: str | None = None
    api_key_env: str = API_KEY_ENV  # the environment variable holding the API key (unset: no key sent)
    context: int = 4096  # the model's context window, in tokens: prompt and answer together
    max_tokens: int = 512  # kept for the answer (`max_tokens` of the request)
    timeout: float = 60.0  # seconds
    concurrency: int = 4  # calls in flight at once
    retries: int = 2  # on connection errors, HTTP 429 and 5xx
    backoff: float = 0.5  # seconds before the first retry, doubled for each next one

    @property
    def budget(self) -> int:
        """Tokens of the prompt: the context less what is kept for the answer."""
        return self.context - self.max_tokens


class GeneratorError(UserError):
    """The generator gave no answer. `code`, as the service's error table names it:
    "generator_timeout", "generator_busy" (no turn within the timeout) or "generator_failed"
    (unreachable, an error status, or an answer that is not a chat completion)."""

    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.code = code
