"""Answers with sources: retrieval-augmented generation over a built index.

A question's passages come from the one search pipeline (`retrieval.pipeline`, through
`deepseek-tf serve`'s service or a built index); `prompt` numbers them into a prompt template
within a token budget, `generator` sends it to an OpenAI-compatible chat-completions endpoint
(DeepSeek's API, vLLM, Ollama, llama.cpp's server), and `citations` maps the `[n]` markers of the
answer back to document ids. `flow.Answerer` ties them together for `POST /answer` and
`deepseek-tf ask`."""

from __future__ import annotations

from deepseek_tf import lazy_exports

__all__ = ["Answerer", "GeneratorError", "GeneratorSettings", "Passage", "build_prompt", "citations"]
__getattr__ = lazy_exports(
    __name__,
    {
        "Answerer": "deepseek_tf.answer.flow",
        "GeneratorError": "deepseek_tf.answer.settings",
        "GeneratorSettings": "deepseek_tf.answer.settings",
        "Passage": "deepseek_tf.answer.prompt",
        "build_prompt": "deepseek_tf.answer.prompt",
        "citations": "deepseek_tf.answer.citations",
    },
)
