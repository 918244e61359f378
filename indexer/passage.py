"""The passage an article answers with: whole sentences around the one that matches best.

A help article's unit (a heading section) can run to thousands of characters; its rows are cut
to ``chunk_chars`` for retrieval, not for reading. The answer is the best sentence and as many
neighbours as fit in ``max_chars``, grown towards the better-scoring side, never cut mid-sentence.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from indexer.lexical import char_bigrams
from indexer.normalize import normalize

_SENTENCE = re.compile(r"[^。！？；!?;\n]*(?:[。！？；!?;]+[”’」』）)\"']*|\n|$)")


def sentence_spans(text: str) -> list[tuple[int, int]]:
    """(start, end) of each sentence of ``text``: split after 。！？；!?; (with closing quotes) and at
    line ends, surrounding whitespace left out; the same sentences as ``chunking.split_sentences``."""
    spans = []
    for m in _SENTENCE.finditer(text):
        start, end = m.start(), m.end()
        while start < end and text[start].isspace():
            start += 1
        while end > start and text[end - 1].isspace():
            end -= 1
        if end > start:
            spans.append((start, end))
    return spans


def window_range(lengths: Sequence[int], scores: Sequence[float], max_chars: int) -> range:
    """The sentences to show: the best-scoring one (the first of equals), then, while they fit in
    ``max_chars``, whichever neighbour scores higher (the following one on a tie: it usually
    carries on what the best one began). The best sentence is shown whole even when longer."""
    if len(lengths) != len(scores):
        raise ValueError(f"{len(lengths)} sentences but {len(scores)} scores")
    if not lengths:
        return range(0)
    best = max(range(len(scores)), key=lambda i: (scores[i], -i))
    lo, hi, size = best, best + 1, lengths[best]
    while True:
        sides = [i for i in (hi, lo - 1) if 0 <= i < len(lengths) and size + lengths[i] <= max_chars]
        if not sides:
            return range(lo, hi)
        pick = max(sides, key=lambda i: (scores[i], i == hi))
        size += lengths[pick]
        lo, hi = min(lo, pick), max(hi, pick + 1)


def window(sentences: Sequence[str], sentence_scores: Sequence[float], max_chars: int) -> str:
    """``window_range`` of ``sentences`` joined (Chinese sentences need no space between them)."""
    r = window_range([len(s) for s in sentences], sentence_scores, max_chars)
    return "".join(sentences[i] for i in r)


def passage(text: str, scores_of: Sequence[float] | None, max_chars: int) -> str:
    """The window of ``text`` under per-sentence ``scores_of`` (as many as ``sentence_spans``),
    cut from the text itself so line breaks between list items stay."""
    spans = sentence_spans(text)
    if not spans:
        return text.strip()
    scores = scores_of if scores_of is not None else [0.0] * len(spans)
    r = window_range([e - s for s, e in spans], scores, max_chars)
    return text[spans[r.start][0] : spans[r.stop - 1][1]]


def bigram_cover(query: str, sentences: Sequence[str]) -> list[float]:
    """The share of the query's character bigrams (normalised) found in each sentence."""
    grams = char_bigrams(normalize(query))
    if not grams:
        return [0.0] * len(sentences)
    return [len(grams & char_bigrams(normalize(s))) / len(grams) for s in sentences]
