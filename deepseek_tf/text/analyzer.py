"""Lexical analyzers: text -> index terms for BM25, hybrid search and negative mining.

- `mixed`: text is cut into CJK runs (Han, kana, Hangul) and the rest. The rest goes through
  the English pipeline exactly as `bm25s.tokenize` runs it (lower-case, words of 2+ word
  characters by `(?u)\\b\\w\\w+\\b`, English stop words out, Snowball stems), so English text
  gives the same terms as `english`. A CJK run becomes its characters and its adjacent
  character pairs: "手机壳" -> 手, 机, 壳, 手机, 机壳. Chinese has no spaces, so without this a
  title is one or two giant "words" and BM25 matches almost nothing.
- `cjk`: `mixed`, plus the character unigrams and bigrams of every Latin/digit run. Chinese
  web and catalogue text often runs Latin words together too ("windowsopen搜狗",
  "galaxya7"), which whole words cannot match.
- `default`: decided once from the texts an index is built on: `cjk` when at least
  CJK_SHARE of their letters and digits are CJK, else `mixed`. The index records the decision.
- `english`: the English pipeline on the whole text (CJK runs become long single words).
- `jieba`: CJK runs segmented into words by jieba (search mode: long words also give their
  shorter dictionary words), Latin runs as `cjk`. Needs `pip install jieba`.
"""

from __future__ import annotations

import re
from collections.abc import Callable

from deepseek_tf.errors import UserError

ANALYZERS = ("default", "mixed", "cjk", "english", "jieba")
CJK_SHARE = 0.3

# Han (unified, extension A, compatibility, extensions B+), kana, Hangul syllables and jamo.
_CJK = (
    "\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\uac00-\ud7af\u1100-\u11ff\u3130-\u318f\U00020000-\U0003134f"
)
_CJK_RUN = re.compile(f"[{_CJK}]+")
_WORD = re.compile(r"(?u)\b\w\w+\b")  # bm25s.tokenize's token_pattern
_LATIN_RUN = re.compile(r"[^\W_]+")  # letters and digits of the non-CJK part


def cjk_ngrams(run: str) -> list[str]:
    """Character unigrams, then adjacent pairs, of one CJK run."""
    return list(run) + [run[i : i + 2] for i in range(len(run) - 1)]


def cjk_share(texts: list[str]) -> float:
    """CJK characters / all letters and digits, over `texts`."""
    cjk = sum(len(run) for t in texts for run in _CJK_RUN.findall(t))
    other = sum(len(run) for t in texts for run in _LATIN_RUN.findall(_CJK_RUN.sub(" ", t)))
    return cjk / max(cjk + other, 1)


class Analyzer:
    """`analyzer(texts) -> list of term lists`; `name` is what reports and index manifests record.

    `default` must be resolved (`resolved(texts)`) before it analyzes anything.
    """

    def __init__(self, name: str = "default"):
        if name not in ANALYZERS:
            raise UserError(f"analyzer {name!r} is not one of {', '.join(ANALYZERS)}")
        import bm25s.stopwords
        import Stemmer

        self.name = name
        self._stop = frozenset(bm25s.stopwords.STOPWORDS_EN)
        self._stem = Stemmer.Stemmer("english").stemWord
        self._stems: dict[str, str] = {}
        self._segment: Callable[[str], list[str]] = cjk_ngrams
        if name == "jieba":
            self._segment = _jieba_segmenter()
        self._latin_ngrams = name in ("cjk", "jieba")

    def resolved(self, texts: list[str]) -> Analyzer:
        """`default` decided on `texts` (the corpus); any other analyzer is returned as it is."""
        if self.name != "default":
            return self
        return Analyzer("cjk" if cjk_share(texts) >= CJK_SHARE else "mixed")

    def _english(self, text: str) -> list[str]:
        out = []
        for word in _WORD.findall(text.lower()):
            if word in self._stop:
                continue
            stem = self._stems.get(word)
            if stem is None:
                stem = self._stems[word] = self._stem(word)
            out.append(stem)
        return out

    def _latin(self, text: str) -> list[str]:
        out = self._english(text)
        if self._latin_ngrams:
            for run in _LATIN_RUN.findall(text.lower()):
                out += cjk_ngrams(run)
        return out

    def terms(self, text: str) -> list[str]:
        if self.name == "english":
            return self._english(text)
        if self.name == "default":
            raise ValueError("the default analyzer is decided on a corpus first: Analyzer.resolved(texts)")
        out, start = [], 0
        for m in _CJK_RUN.finditer(text):
            out += self._latin(text[start : m.start()])
            out += self._segment(m.group())
            start = m.end()
        return out + self._latin(text[start:])

    def __call__(self, texts: list[str]) -> list[list[str]]:
        return [self.terms(t) for t in texts]


def _jieba_segmenter() -> Callable[[str], list[str]]:
    try:
        import jieba
    except ImportError:
        raise UserError("analyzer jieba needs the jieba package: pip install jieba") from None
    import logging

    jieba.setLogLevel(logging.WARNING)  # its dictionary-loading lines would break one-line errors
    return lambda run: [w for w in jieba.cut_for_search(run) if w.strip()]
