"""The generator's command-line flags, the same for `deepseek-tf ask` and `deepseek-tf serve`."""

from __future__ import annotations

import argparse

from deepseek_tf.answer.settings import GeneratorSettings
from deepseek_tf.console import number
from deepseek_tf.errors import UserError

DEFAULTS = GeneratorSettings()  # the defaults, declared once (answer.settings)
TOKENS = "tokens estimated as 1 per CJK character and 1 per 4 other characters"


def add_generator_arguments(p: argparse.ArgumentParser, required: bool, concurrency: bool = False) -> None:
    """The flags of a generator (`required`: --generator-url and --generator-model must be given)
    and of the prompt; `concurrency`: also --generator-concurrency (a server's)."""
    p.add_argument(
        "--generator-url",
        metavar="URL",
        required=required,
        help="base URL of an OpenAI-compatible chat-completions server, asked at URL/v1/chat/completions: "
        "https://api.deepseek.com, vLLM, Ollama (http://127.0.0.1:11434), llama.cpp's llama-server",
    )
    p.add_argument("--generator-model", metavar="NAME", required=required, help="the model the server is asked for")
    p.add_argument(
        "--generator-api-key-env",
        metavar="NAME",
        default=DEFAULTS.api_key_env,
        help="environment variable holding the generator's API key, sent as Authorization: Bearer KEY and "
        f"never logged (default: {DEFAULTS.api_key_env}; unset: no key sent, as local servers need none)",
    )
    p.add_argument(
        "--generator-context",
        type=number(int, 1),
        metavar="N",
        default=DEFAULTS.context,
        help=f"the model's context window: prompt and answer fit in N tokens ({TOKENS}); passages that do not "
        f"fit are cut or left out, in rank order (default: {DEFAULTS.context})",
    )
    p.add_argument(
        "--generator-max-tokens",
        type=number(int, 1),
        metavar="N",
        default=DEFAULTS.max_tokens,
        help=f"tokens of the context kept for the answer (default: {DEFAULTS.max_tokens})",
    )
    p.add_argument(
        "--generator-timeout",
        type=number(float, 0, low_open=True),
        metavar="S",
        default=DEFAULTS.timeout,
        help=f"seconds the generator has for an answer (streamed: between two events); not retried "
        f"(default: {DEFAULTS.timeout:g}). Connection errors, HTTP 429 and 5xx are retried {DEFAULTS.retries} "
        "times with exponential backoff",
    )
    if concurrency:
        p.add_argument(
            "--generator-concurrency",
            type=number(int, 1),
            metavar="N",
            default=DEFAULTS.concurrency,
            help=f"answers generated at once; others wait their turn (default: {DEFAULTS.concurrency})",
        )
    p.add_argument(
        "--prompt-template",
        metavar="FILE",
        help="prompt template (UTF-8 text) holding {question} and {passages} (the numbered passages, "
        "[1] ... [k]); default: the one shipped in deepseek_tf/answer/templates/default.txt",
    )


def generator_settings(args: argparse.Namespace) -> GeneratorSettings | None:
    """The settings the flags give; None without --generator-url (a server without /answer)."""
    if args.generator_url is None and args.generator_model is None:
        if args.prompt_template is not None:
            raise UserError("--prompt-template needs --generator-url and --generator-model", exit_code=2)
        return None
    if args.generator_model is None:
        raise UserError("--generator-url needs --generator-model too", exit_code=2)
    if args.generator_url is None:
        raise UserError("--generator-model needs --generator-url too", exit_code=2)
    if not args.generator_url.startswith(("http://", "https://")):
        raise UserError(f"--generator-url must start with http:// or https://, not {args.generator_url!r}", 2)
    if args.generator_max_tokens >= args.generator_context:
        raise UserError(
            f"--generator-max-tokens ({args.generator_max_tokens}) must be below --generator-context "
            f"({args.generator_context}): the prompt needs room too",
            exit_code=2,
        )
    return GeneratorSettings(
        url=args.generator_url,
        model=args.generator_model,
        api_key_env=args.generator_api_key_env,
        context=args.generator_context,
        max_tokens=args.generator_max_tokens,
        timeout=args.generator_timeout,
        concurrency=getattr(args, "generator_concurrency", DEFAULTS.concurrency),
    )
