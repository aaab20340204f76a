"""The passages an answer cites: its `[1]`, `[2, 3]`, `[1][3]` and `[2-4]` markers, mapped back to
the documents that were given to the generator under those numbers."""

from __future__ import annotations

import re

from deepseek_tf.answer.prompt import Passage

# a bracket of numbers separated by commas, semicolons or a range dash: [1], [2, 3], [1; 4], [2-4]
_MARKER = re.compile(r"\[\s*(\d+(?:\s*[,;\-–]\s*\d+)*)\s*\]")
_PART = re.compile(r"(\d+)(?:\s*[-–]\s*(\d+))?")


def cited_numbers(text: str, count: int) -> list[int]:
    """The passage numbers TEXT cites, in the order first cited; a number outside 1..COUNT (no
    such passage was given, or a year like [2024]) is ignored."""
    seen: dict[int, None] = {}
    for marker in _MARKER.finditer(text):
        for first, last in _PART.findall(marker.group(1)):
            low, high = int(first), int(last or first)
            for n in range(max(low, 1), min(high, count) + 1):
                seen.setdefault(n, None)
    return list(seen)


def citations(text: str, passages: list[Passage]) -> list[dict]:
    """[{"n", "id", "title"}] of the passages TEXT cites (passage n is PASSAGES[n - 1])."""
    return [
        {"n": n, "id": passages[n - 1].id, "title": passages[n - 1].title} for n in cited_numbers(text, len(passages))
    ]
