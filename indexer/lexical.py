"""A lexical channel: BM25 over character unigrams and bigrams of normalised text.

Characters rather than jieba words: colloquial and Traditional/typo queries segment badly
(shared/notes/default-model.md: BM25 on jieba tokens hit@1 0.27, on characters+bigrams 0.55).
It is built in memory from the chunks at load time (milliseconds for a help center) and used
only when the configuration fuses it in; the ablation table in the eval report shows whether it
earns its place.
"""

from __future__ import annotations

from collections.abc import Sequence, Set

import numpy as np
from scipy import sparse

BM25_K1 = 1.2  # term-frequency saturation: the usual BM25 default
BM25_B = 0.75  # length normalisation: the usual BM25 default


def char_terms(text: str) -> list[str]:
    chars = [c for c in text if c.isalnum()]
    return chars + [chars[i] + chars[i + 1] for i in range(len(chars) - 1)]


def char_bigrams(text: str) -> set[str]:
    """Character bigrams of the letters and digits of ``text`` (the text itself if shorter)."""
    t = "".join(ch for ch in text if ch.isalnum())
    return {t[i : i + 2] for i in range(len(t) - 1)} or ({t} if t else set())


def jaccard(x: Set[str], y: Set[str]) -> float:
    return len(x & y) / len(x | y) if x and y else 0.0


def _posting_positions(ptr: np.ndarray, terms: np.ndarray) -> np.ndarray:
    """Positions of every posting of ``terms`` in a CSC-style (``ptr``, rows) layout, without a
    Python loop over the terms."""
    starts = ptr[terms]
    lengths = ptr[terms + 1] - starts
    return np.repeat(starts - np.cumsum(lengths) + lengths, lengths) + np.arange(int(lengths.sum()))


class LexicalIndex:
    def __init__(self, texts: Sequence[str]) -> None:
        vocab: dict[str, int] = {}
        rows, cols, vals = [], [], []
        lengths = np.zeros(len(texts), dtype=np.float64)
        for i, t in enumerate(texts):
            counts: dict[int, int] = {}
            terms = char_terms(t)
            lengths[i] = len(terms)
            for term in terms:
                j = vocab.setdefault(term, len(vocab))
                counts[j] = counts.get(j, 0) + 1
            for j, c in counts.items():
                rows.append(i)
                cols.append(j)
                vals.append(c)
        n = len(texts)
        tf = sparse.csr_matrix((vals, (rows, cols)), shape=(n, max(1, len(vocab))), dtype=np.float64)
        df = np.bincount(tf.indices, minlength=tf.shape[1])
        self.idf = np.log1p((n - df + 0.5) / (df + 0.5))
        avg = lengths.mean() if n else 1.0
        norm = BM25_K1 * (1 - BM25_B + BM25_B * lengths / max(avg, 1e-9))
        tf = tf.tocoo()
        weighted = tf.data * (BM25_K1 + 1) / (tf.data + norm[tf.row])
        self.matrix = sparse.csr_matrix((weighted, (tf.row, tf.col)), shape=tf.shape)
        # Postings by term (CSC): a query touches a few dozen terms, so summing their postings
        # beats a product with the whole matrix (0.17 → 0.03 ms for the bundled KB).
        csc = self.matrix.tocsc()
        self._ptr, self._rows = csc.indptr, csc.indices
        self._weights = csc.data * np.repeat(self.idf, np.diff(csc.indptr))  # idf folded in once
        self._n = n
        self.vocab = vocab

    def scores(self, query: str) -> np.ndarray:
        """BM25 score of every text for ``query`` (zeros where nothing is shared)."""
        terms = [j for j in (self.vocab.get(t) for t in set(char_terms(query))) if j is not None]
        if not terms:
            return np.zeros(self._n)
        pos = _posting_positions(self._ptr, np.array(terms))
        return np.bincount(self._rows[pos], weights=self._weights[pos], minlength=self._n)


class BigramPostings:
    """Which texts contain each character bigram, to count a query's bigrams in every text at once.

    ``counts(grams)[i]`` is ``len(grams & sets[i])``: the same as a loop of set intersections
    (tests/indexer/test_lexical.py checks it against one), in two numpy calls.
    """

    def __init__(self, sets: Sequence[Set[str]]) -> None:
        vocab: dict[str, int] = {}
        postings: list[list[int]] = []
        for i, grams in enumerate(sets):
            for g in grams:
                j = vocab.setdefault(g, len(vocab))
                if j == len(postings):
                    postings.append([])
                postings[j].append(i)
        self.vocab = vocab
        self._ptr = np.zeros(len(postings) + 1, dtype=np.int64)
        self._ptr[1:] = np.cumsum([len(p) for p in postings])
        self._rows = np.array([i for p in postings for i in p], dtype=np.int64)
        self._n = len(sets)

    def counts(self, grams: Set[str]) -> np.ndarray:
        """How many of ``grams`` each text contains."""
        ids = [j for j in (self.vocab.get(g) for g in grams) if j is not None]
        if not ids:
            return np.zeros(self._n, dtype=np.int64)
        return np.bincount(self._rows[_posting_positions(self._ptr, np.array(ids))], minlength=self._n)
