"""The prompt of an answer: a template whose `{question}` and `{passages}` are filled in, the
passages numbered `[1]`, `[2]`, ... in rank order and kept within a token budget.

Tokens are estimated, not counted: the generator's tokenizer is not known here (each server has
its own). The estimate is one token per CJK (wide) character and one per 4 other characters,
about what BPE tokenizers give for English and Chinese text. The budget is the generator's
context minus the tokens kept for the answer; the first passage that does not fit is cut to
the room left (or dropped when under MIN_CUT_TOKENS remain) and named, and the passages after it
are left out."""

from __future__ import annotations

import math
import unicodedata
from dataclasses import dataclass, replace
from pathlib import Path

from deepseek_tf.errors import UserError

DEFAULT_TEMPLATE = Path(__file__).parent / "templates" / "default.txt"
QUESTION, PASSAGES = "{question}", "{passages}"
SEPARATOR = "\n\n"  # between two numbered passages
# a passage cut to less than this says too little to cite: it is dropped instead
MIN_CUT_TOKENS = 32
ELLIPSIS = " …"  # ends a cut passage, so the generator sees that it stops mid-text


@dataclass(frozen=True)
class Passage:
    id: str
    text: str
    title: str | None = None


@dataclass(frozen=True)
class Prompt:
    text: str
    passages: list[Passage]  # those in the prompt, passage [n] at n - 1 (a cut one with its cut text)
    # the first passage that did not fit: {"n", "id", "cut": its start kept or not, "left_out": passages after it}
    truncated: dict | None = None


def estimate_tokens(text: str) -> float:
    """About how many tokens TEXT takes: 1 per wide (CJK) character, 1/4 per other character.
    Additive, so a text's estimate is the sum of its parts'."""
    wide = sum(1 for ch in text if ch >= "\u1100" and unicodedata.east_asian_width(ch) in "WF")
    return wide + (len(text) - wide) / 4


def load_template(path: str | Path | None = None) -> str:
    """The template at PATH (default: the one shipped with the package), checked to hold
    `{question}` and exactly one `{passages}`."""
    shown = f"--prompt-template {path}" if path is not None else str(DEFAULT_TEMPLATE)
    try:
        text = Path(path or DEFAULT_TEMPLATE).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise UserError(f"{shown}: cannot read it ({getattr(e, 'strerror', None) or e})", exit_code=2) from None
    if QUESTION not in text or text.count(PASSAGES) != 1:
        raise UserError(
            f"{shown}: a prompt template holds {QUESTION} (the question) and {PASSAGES} once (the numbered passages)",
            exit_code=2,
        )
    return text


def _cut(text: str, room: float) -> str:
    """The longest start of TEXT within ROOM tokens, ended at a space when one is near."""
    used = 0.0
    for end, ch in enumerate(text):
        used += estimate_tokens(ch)
        if used > room:
            space = text.rfind(" ", 0, end)
            return text[: space if space > end * 0.8 else end].rstrip()
    return text


def build_prompt(question: str, passages: list[Passage], template: str, budget: int) -> Prompt:
    """TEMPLATE filled with QUESTION and PASSAGES (rank order, numbered from 1) in at most about
    BUDGET tokens; a UserError when the question and template alone exceed it."""
    head, tail = (part.replace(QUESTION, question) for part in template.split(PASSAGES))
    frame = estimate_tokens(head) + estimate_tokens(tail)
    if frame > budget:
        raise UserError(
            f"the question and the prompt template take about {math.ceil(frame)} tokens, more than the {budget} "
            "left for passages (--generator-context minus --generator-max-tokens)"
        )
    room, blocks, given, truncated = budget - frame, [], [], None
    for n, passage in enumerate(passages, 1):
        block = (SEPARATOR if blocks else "") + f"[{n}] "
        cost = estimate_tokens(block) + estimate_tokens(passage.text)
        if cost <= room:
            blocks.append(block + passage.text)
            given.append(passage)
            room -= cost
            continue
        left = room - estimate_tokens(block) - estimate_tokens(ELLIPSIS)
        kept = _cut(passage.text, left) if left >= MIN_CUT_TOKENS else ""
        if kept:
            blocks.append(block + kept + ELLIPSIS)
            given.append(replace(passage, text=kept))
        truncated = {"n": n, "id": passage.id, "cut": bool(kept), "left_out": len(passages) - n}
        break
    return Prompt(head + "".join(blocks) + tail, given, truncated)


def index_passages(index, ids: list[str]) -> list[Passage]:
    """The passages of IDS in INDEX (a built index, or anything with its `text` and `fields`): the
    text it holds (title and text joined) and the stored title, if any. An id no longer in the
    index (deleted since it was found) is skipped."""
    out = []
    for doc_id in ids:
        try:
            text, title = index.text(doc_id), index.fields(doc_id).get("title")
        except KeyError:
            continue
        out.append(Passage(doc_id, text, None if title is None else str(title)))
    return out
