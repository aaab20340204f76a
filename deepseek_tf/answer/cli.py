"""`deepseek-tf ask --index DIR --generator-url URL --generator-model NAME "question"`: an answer
with its numbered sources, from the passages the one search pipeline finds in a built index."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from typing import TYPE_CHECKING

from deepseek_tf.answer.flags import TOKENS, add_generator_arguments, generator_settings
from deepseek_tf.answer.prompt import Passage, Prompt, index_passages, load_template
from deepseek_tf.answer.settings import DEFAULT_K
from deepseek_tf.console import command_parser, number
from deepseek_tf.data.beir import normalize_text
from deepseek_tf.errors import UserError, cli_entry
from deepseek_tf.retrieval.pipeline import MODES, SearchPipeline

if TYPE_CHECKING:
    from deepseek_tf.answer.flow import Answerer


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = command_parser(
        "ask",
        "Answer a question with sources: its best passages in an index built by `deepseek-tf index` (dense, "
        "BM25 or hybrid, optionally reranked, as `search` and `serve` rank them) are numbered into a prompt "
        f"({TOKENS}) and sent to an OpenAI-compatible chat-completions server; prints the answer and the "
        "passages it cites. The API key is read from --generator-api-key-env's variable.",
        [
            'deepseek-tf ask --index runs/cranfield_idx --generator-url http://127.0.0.1:8080 --generator-model local "what causes wing flutter?"',  # noqa: E501 (a command to copy whole)
            "DEEPSEEK_TF_GENERATOR_API_KEY=sk-... deepseek-tf ask --index runs/cranfield_idx --generator-url "
            'https://api.deepseek.com --generator-model deepseek-chat --mode hybrid --json "heat transfer at Mach 5"',
        ],
    )
    p.add_argument("question", nargs="+", help="the question (its words are joined by spaces: quotes are optional)")
    p.add_argument("--index", required=True, help="built index directory (deepseek-tf index --output DIR)")
    p.add_argument(
        "--top-k",
        type=number(int, 1),
        default=DEFAULT_K,
        help=f"passages retrieved and given to the generator (default: {DEFAULT_K})",
    )
    p.add_argument(
        "--mode",
        choices=MODES,
        default="dense",
        help="retriever: dense (the index's model), bm25, or hybrid (both fused by reciprocal rank); default: dense",
    )
    p.add_argument("--rerank", metavar="MODEL", help="cross-encoder that reorders the retriever's top 100 first")
    add_generator_arguments(p, required=True)
    p.add_argument(
        "--json",
        action="store_true",
        help='print {"answer", "citations": [{"n", "id", "title"}], "truncated", "retrieval_ms", "generation_ms"}',
    )
    return p.parse_args(argv)


def retrieve(index, question: str, k: int, mode: str = "dense", reranker=None) -> list[Passage]:
    """QUESTION's best K passages in INDEX (a built index) through the one search pipeline, best first."""
    encode = index.embedder().encode_queries if mode != "bm25" else None  # BM25 alone loads no model
    pipeline = SearchPipeline(encode, index.search_dense, index.search_bm25, index.text, reranker)
    pipeline.check(mode, reranker is not None)
    hits = pipeline.search(question, k, mode, rerank=reranker is not None)
    return index_passages(index, [h.id for h in hits])


async def _generate(answerer: Answerer, prompt: Prompt) -> dict:
    try:
        return await answerer.answer(prompt)
    finally:
        await answerer.aclose()


def format_answer(result: dict) -> str:
    lines = [result["answer"].strip(), ""]
    if result["citations"]:
        lines.append("sources:")
        lines += [f"  [{c['n']}] {c['id']}" + (f"  {c['title']}" if c["title"] else "") for c in result["citations"]]
    else:
        lines.append("sources: none cited")
    return "\n".join(lines)


@cli_entry
def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    question = " ".join(args.question).strip()
    if not normalize_text(question):
        raise UserError("the question must not be empty (or only spaces and control characters)")
    try:
        from deepseek_tf.answer.flow import Answerer
    except ImportError:  # httpx, the generator's HTTP client
        raise UserError("deepseek-tf ask needs httpx: pip install 'deepseek_tf[serve]'") from None
    # a bad template or generator flag fails here, before the index and its model load
    answerer = Answerer(generator_settings(args), load_template(args.prompt_template))
    from deepseek_tf.index.live import LiveIndex

    index = LiveIndex.open(args.index)  # with the writes `serve` and `index --update` logged
    reranker = None
    if args.rerank is not None:
        from deepseek_tf.retrieval.rerank import Reranker

        reranker = Reranker.load(args.rerank)
    start = time.perf_counter()
    passages = retrieve(index, question, args.top_k, args.mode, reranker)
    retrieval_ms = round((time.perf_counter() - start) * 1000, 3)
    prompt = answerer.prompt(question, passages)
    result = asyncio.run(_generate(answerer, prompt))
    result = {**result, "retrieval_ms": retrieval_ms}
    if args.json:
        print(json.dumps(result, indent=2, ensure_ascii=False))
        return 0
    print(format_answer(result))
    cut = result["truncated"]
    if cut is not None:
        what = "cut short" if cut["cut"] else "left out"
        after = f", and the {cut['left_out']} after it left out," if cut["left_out"] else ""
        print(f"note: passage [{cut['n']}] {cut['id']} was {what}{after} to fit --generator-context", file=sys.stderr)
    print(f"retrieval {retrieval_ms:.0f} ms, generation {result['generation_ms']:.0f} ms", file=sys.stderr)
    return 0
