"""Homophone typos of pinyin input (拼音输入法), corrected against the help center's own words.

A shopper who types 快递 with a pinyin keyboard and picks the wrong candidate sends 快第; 发票
becomes 发漂, 物流 物硫, 运费险 运废险. Such a character breaks every bigram it is in, so both
the lexical channel and the encoder lose the word. ``Speller`` puts the intended character back
when the evidence is one-sided:

- the typed character is in no word: neither pair it forms with a neighbour is a dictionary word
  (jieba's dictionary plus the KB's ``userdict.txt``) or a pair the KB's texts use KNOWN_AT
  times or more, and no longer dictionary word covers it;
- a character sharing its main reading makes, with that neighbour, a dictionary word that the
  KB's texts use often, and far more often than the typed pair.

A word typed in pinyin with the input method off (huabei fenqi 咋弄, pailitao 打不开) is put back
the same way: a run of Latin letters that spells, syllable by syllable, one or more of the KB's
frequent words (its user dictionary's, or dictionary words its texts use often) becomes them.
English words spell none, so they stay.

Words the KB never uses are never produced, so a correct query about something the help center
does not cover stays as it was. The query the shopper typed is kept (``Answer.query``) and the
trace lists what was changed.
"""

from __future__ import annotations

import functools
import operator
import re
import unicodedata
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from kb.errors import ConfigError

# Dev's 34 typo-tagged queries, and what else changes, as each constant moves (the others fixed):
MIN_COUNT = 5  # the corrected word appears at least this often in the KB's texts (3 and 10: same)
RATIO = 10  # … and at least this many times as often as the typed pair + 1 (3: 21 fixed and 9
# other queries changed; 30: 18 and 2; 10: 21 and 6)
# A typed pair the KB's texts use this often is taken as meant. Pairs across word boundaries
# occur by chance (快第 twice, in 最快第二天). 1: 13 fixed and 4 others changed; 2: 18 and 6;
# 3: 21 and 6; 5: 22 and 6 (3 was chosen first and kept: the more conservative).
KNOWN_AT = 3
MAX_WORD = 4  # longest dictionary word checked for covering a character
# Shortest Latin run read as pinyin: shorter ones are abbreviations (kd, tb, app, vip) or English.
MIN_PINYIN_LETTERS = 4
MAX_PINYIN_WORDS = 3  # words one Latin run may spell (huabeifenqi: two)
MAX_PINYIN_LETTERS = 30  # longer runs are no words typed in pinyin (a pasted link, a code)


@dataclass(frozen=True)
class Correction:
    position: int  # index of the character in the text (of a pinyin run: in the text as typed)
    typed: str  # a character, or a run of pinyin letters (huabei)
    corrected: str
    word: str  # the KB word the corrected character makes with its neighbour (or the run spells)


@dataclass(frozen=True)
class Spelled:
    text: str
    corrections: tuple[Correction, ...] = ()


_HAN_RUN = re.compile("[\u4e00-\u9fff]{2,}")  # the CJK Unified Ideographs block, as in correct()
# A run of letters on its own (normalised text is lower case): not part of a link, an address or a code
_LATIN_RUN = re.compile(r"(?<![a-z0-9./:@_\-])[a-z]+(?![a-z0-9./:@_\-])")
_SPACE_AMID_HAN = re.compile(r"(?<=[\u4e00-\u9fff])\s+(?=[\u4e00-\u9fff])")


def _toneless(syllable: str) -> str:
    return "".join(c for c in unicodedata.normalize("NFKD", syllable) if not unicodedata.combining(c))


@functools.lru_cache(maxsize=1)
def _pinyin_table() -> dict[int, str]:
    """pypinyin's character table (code point -> "zhōng,zhòng"), read from its JSON file. Not
    ``import pypinyin.pinyin_dict``: importing the package loads its phrase dictionary as well,
    49 MB of RSS in every serving process, against 5 MB for this."""
    import importlib.util
    import json

    spec = importlib.util.find_spec("pypinyin")  # finds the package without running it
    if spec is None or not spec.submodule_search_locations:
        raise ConfigError("pypinyin is not installed; run `make setup` (or pip install pypinyin)")
    path = Path(next(iter(spec.submodule_search_locations))) / "pinyin_dict.json"
    try:
        return {int(k): v for k, v in json.loads(path.read_text(encoding="utf-8")).items()}
    except (OSError, ValueError) as e:
        raise ConfigError(f"cannot read pypinyin's character table {path} ({e}); reinstall pypinyin") from e


@functools.lru_cache(maxsize=1 << 16)  # characters shoppers type: bounded, as queries are arbitrary
def readings(ch: str) -> tuple[str, ...]:
    """Toneless pinyin readings of one character, the main one first; () for a non-Han one."""
    v = _pinyin_table().get(ord(ch)) if len(ch) == 1 else None
    return tuple(dict.fromkeys(_toneless(s) for s in v.split(","))) if v else ()


class Words:
    """A set of 2..MAX_WORD-character words kept as one sorted fixed-width array: jieba's 330k
    words of 2..4 characters take 5 MB this way against 57 MB as a Python set, in every serving
    process."""

    def __init__(self, words: Iterable[str]) -> None:
        # fromiter: no list of 330k str objects in between
        keep = np.fromiter((w for w in words if 2 <= len(w) <= MAX_WORD), dtype=f"<U{MAX_WORD}")
        self._a = np.unique(keep)

    def __len__(self) -> int:
        return len(self._a)

    def __contains__(self, word: object) -> bool:
        if not isinstance(word, str) or not 2 <= len(word) <= MAX_WORD:
            return False
        i = int(self._a.searchsorted(word))  # the method: np.searchsorted's wrapper costs as much again
        return i < len(self._a) and str(self._a[i]) == word


@functools.lru_cache(maxsize=1)
def jieba_words() -> Words:
    """The words of jieba's dictionary (read once per process)."""
    import jieba

    with jieba.get_dict_file() as f:
        return Words(line.decode("utf-8").split(" ", 1)[0] for line in f)


def read_userdict(path: Path | None) -> list[str]:
    """The words of a jieba user dictionary (``word [freq] [tag]`` per line)."""
    if path is None:
        return []
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"cannot read the user dictionary {path} ({e}); fix or remove it") from e
    return [w for w in (ln.split()[0] for ln in lines if ln.strip() and not ln.startswith("#")) if len(w) >= 2]


class Speller:
    """``correct(text) -> Spelled``: homophone typos replaced by the KB's own words."""

    def __init__(
        self,
        texts: Iterable[str],
        words: Iterable[str] = (),
        min_count: int = MIN_COUNT,
        ratio: float = RATIO,
        known_at: int = KNOWN_AT,
    ) -> None:
        if min_count < 1 or ratio < 1 or known_at < 1:
            raise ConfigError(f"speller needs min_count, ratio and known_at ≥ 1; got {min_count}, {ratio}, {known_at}")
        self.ratio = ratio
        self.pairs: Counter[str] = Counter()
        for t in texts:
            for run in _HAN_RUN.findall(t):  # Counter.update counts in C: half the time of a pair loop
                self.pairs.update(map(operator.add, run, run[1:]))
        self.dictionary = jieba_words()
        self.extra = frozenset(words)  # the KB's own words (userdict.txt)
        # a set, not Counter look-ups: a missing key costs Counter a Python-level __missing__ call
        self._known_pairs = frozenset(p for p, n in self.pairs.items() if n >= known_at)
        self._tables(((p, n) for p, n in sorted(self.pairs.items()) if n >= min_count), min_count)

    def _tables(self, frequent: Iterable[tuple[str, int]], min_count: int) -> None:
        """The look-ups ``correct`` reads, from the KB's frequent pairs (sorted, with their counts)
        and its own words."""
        # What a typed character could have meant, by its neighbour and the syllable typed: the
        # KB's frequent dictionary-word pairs, under every reading of the character that would
        # replace it. Two dict look-ups a character instead of a scan of its homophones.
        self._after: dict[tuple[str, str], list[str]] = {}  # (first char, syllable) -> second chars
        self._before: dict[tuple[str, str], list[str]] = {}  # (syllable, second char) -> first chars
        # The KB's words by how they are spelt in pinyin (main readings, no tones): its frequent
        # dictionary pairs, and the words of its user dictionary that its texts use, the most used
        # one per spelling.
        spelt: dict[str, tuple[int, str]] = {}
        for pair, n in frequent:
            if not self.is_word(pair):
                continue
            for r in readings(pair[1]):
                self._after.setdefault((pair[0], r), []).append(pair[1])
            for r in readings(pair[0]):
                self._before.setdefault((r, pair[1]), []).append(pair[0])
            _keep_spelling(spelt, pair, n)
        for w in sorted(self.extra):
            # used by the KB (each of its pairs is in its texts): a bundled word a tea shop never
            # says is never produced
            if all(self.pairs.get(w[i : i + 2], 0) for i in range(len(w) - 1)):
                _keep_spelling(spelt, w, min_count)  # the KB named it a word: as good as a frequent pair
        self._spelt = {key: w for key, (_, w) in spelt.items()}

    def is_word(self, text: str) -> bool:
        return text in self.extra or text in self.dictionary

    def _covered(self, text: str, i: int) -> bool:
        """Whether position ``i`` is inside a dictionary word of 3..MAX_WORD characters (its
        pairs are checked apart)."""
        for n in range(3, MAX_WORD + 1):
            for start in range(max(0, i - n + 1), min(i, len(text) - n) + 1):
                if self.is_word(text[start : start + n]):
                    return True
        return False

    def correct(self, text: str) -> Spelled:
        spelt, latin = self.transliterate(text)
        chars = self.homophones(spelt)
        if not latin:  # nearly every message
            return chars
        return Spelled(chars.text, tuple(sorted((*latin, *chars.corrections), key=lambda c: c.position)))

    def transliterate(self, text: str) -> tuple[str, tuple[Correction, ...]]:
        """Latin runs that spell the KB's words in pinyin, replaced by them (huabei → 花呗). Runs
        next to each other (only spaces between) go together or not at all: in a phrase of English
        or a name (quake lake, huawei pay) one of them spells nothing, and like or lake must stay."""
        if not self._spelt or not _LATIN_RUN.search(text):
            return text, ()
        out: list[str] = []
        found: list[Correction] = []
        at = 0
        for group in _groups(list(_LATIN_RUN.finditer(text)), text):
            spelt = [
                self._spelling_of(m.group()) if MIN_PINYIN_LETTERS <= len(m.group()) <= MAX_PINYIN_LETTERS else None
                for m in group
            ]
            if any(words is None for words in spelt):
                continue
            for m, words in zip(group, spelt, strict=True):
                word = "".join(words or ())
                out.append(text[at : m.start()])
                found.append(Correction(m.start(), m.group(), word, word))
                out.append(word)
                at = m.end()
        if not found:
            return text, ()
        out.append(text[at:])
        # a word beside Han text or another word needs no space: 花呗 分期 咋弄 reads as 花呗分期咋弄
        return _SPACE_AMID_HAN.sub("", "".join(out)), tuple(found)

    def _spelling_of(self, run: str) -> list[str] | None:
        """The fewest KB words (at most MAX_PINYIN_WORDS) whose spellings make up ``run``, or None."""
        best: list[list[str] | None] = [[]] + [None] * len(run)
        for end in range(1, len(run) + 1):
            for start in range(end):
                prev, word = best[start], self._spelt.get(run[start:end])
                # a word twice in a row is a name or noise (bilibili), not what a shopper means
                if prev is None or word is None or len(prev) >= MAX_PINYIN_WORDS or prev[-1:] == [word]:
                    continue
                if best[end] is None or len(prev) + 1 < len(best[end] or ()):
                    best[end] = [*prev, word]
        return best[-1] or None

    def homophones(self, text: str) -> Spelled:
        """Homophone typos of Han characters put back (快第 → 快递)."""
        found: list[tuple[int, int, Correction]] = []
        known, last = self._known_pairs, len(text) - 1
        for i, ch in enumerate(text):
            if not "\u4e00" <= ch <= "\u9fff":  # a Han character (_HAN_RUN's block); inlined: runs on every query
                continue
            prev = text[i - 1] if i and "\u4e00" <= text[i - 1] <= "\u9fff" else ""
            nxt = text[i + 1] if i < last and "\u4e00" <= text[i + 1] <= "\u9fff" else ""
            # a lone character has no pair; with prev or nxt empty, that side is one character
            if not (prev or nxt) or prev + ch in known or ch + nxt in known:
                continue
            # (typed pair, neighbour, whether the neighbour comes first)
            sides = [(prev + ch, prev, True)] if prev else []
            sides += [(ch + nxt, nxt, False)] if nxt else []
            # The syllable typed is the character's main reading: with all its readings, dev had 9
            # non-typo queries changed instead of 6, and the same 21 typos fixed.
            main = readings(ch)[:1]
            if not main:
                continue
            r = main[0]
            best: tuple[int, Correction] | None = None
            for typed, other, first in sides:
                for cand in self._after.get((other, r), ()) if first else self._before.get((r, other), ()):
                    word = other + cand if first else cand + other
                    n = self.pairs[word]
                    if cand == ch or n < self.ratio * (self.pairs.get(typed, 0) + 1):
                        continue
                    if best is None or n > best[0] or (n == best[0] and word < best[1].word):
                        best = (n, Correction(i, ch, cand, word))
            # the dictionary last: most characters have no candidate at all
            if best is None or any(self.is_word(typed) for typed, _, _ in sides) or self._covered(text, i):
                continue
            found.append((best[0], i, best[1]))
        if not found:
            return Spelled(text)
        chars = list(text)
        done: list[Correction] = []
        # strongest evidence first; two neighbours are never both changed (one of them was typed right)
        for _, i, c in sorted(found, key=lambda f: (-f[0], f[1])):
            if any(abs(d.position - i) == 1 for d in done):
                continue
            chars[i] = c.corrected
            done.append(c)
        return Spelled("".join(chars), tuple(sorted(done, key=lambda c: c.position)))


def _groups(runs: list[re.Match[str]], text: str) -> list[list[re.Match[str]]]:
    """Latin runs grouped where only spaces stand between them (huabei fenqi: one group)."""
    groups: list[list[re.Match[str]]] = []
    for m in runs:
        if groups and not text[groups[-1][-1].end() : m.start()].strip():
            groups[-1].append(m)
        else:
            groups.append([m])
    return groups


def _keep_spelling(spelt: dict[str, tuple[int, str]], word: str, n: int) -> None:
    """Keep ``word`` (used ``n`` times) as the word spelt by its main readings, unless a more used
    word (or, at a tie, an earlier one) is spelt the same."""
    parts = [readings(ch)[:1] for ch in word]
    if len(word) < 2 or not all(parts):
        return
    key = "".join(p[0] for p in parts)
    held = spelt.get(key)
    if held is None or n > held[0] or (n == held[0] and word < held[1]):
        spelt[key] = (n, word)


def speller_for(texts: Sequence[str], userdict: Path | None) -> Speller:
    """The speller of one index: its texts' pairs, jieba's dictionary and the KB's user words."""
    return Speller(texts, read_userdict(userdict))
