"""Query expansion from ``resources/synonyms.yaml``: a shopper's word brings in the help center's term.

The file maps a standard term to the ways shoppers say it (``退款: [退钱, 把钱退回来, …]``).
When a query contains one of those sayings and not the term itself, the term is appended to
the text that is embedded and matched lexically, so "钱怎么还没退" also matches entries written
as "退款". The original query is never rewritten, only extended.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from indexer.normalize import normalize
from kb.errors import ConfigError

# A one-character saying matches inside unrelated words ("号" in "手机号" pulled in 尺码 for
# account questions on dev), so sayings need at least this many characters.
MIN_SAYING_CHARS = 2


class SynonymExpander:
    """``expand(text) -> (text with standard terms appended, the terms added)``."""

    def __init__(self, synonyms: Mapping[str, Sequence[str]], min_chars: int = MIN_SAYING_CHARS) -> None:
        if min_chars < 1:
            raise ConfigError(f"min_chars={min_chars} must be ≥ 1")
        self._terms: list[str] = []
        # sayings by their first character: a query only needs the sayings that start with one of
        # its characters (about 40 substring tests instead of 500; 47 → 5 µs a query)
        self._by_first: dict[str, list[tuple[str, int]]] = {}
        for term, sayings in synonyms.items():
            canon = normalize(str(term))
            if not canon:
                raise ConfigError(f"synonyms.yaml has an empty standard term (sayings {list(sayings)})")
            kept = {s for s in (normalize(str(x)) for x in sayings) if len(s) >= min_chars and s != canon}
            if not kept:
                continue
            if canon not in self._terms:  # two keys may normalise alike (繁/简): one term
                self._terms.append(canon)
            for saying in sorted(kept):
                self._by_first.setdefault(saying[0], []).append((saying, self._terms.index(canon)))

    def __len__(self) -> int:
        return len(self._terms)

    def expand(self, text: str) -> tuple[str, tuple[str, ...]]:
        found = {i for ch in set(text) for saying, i in self._by_first.get(ch, ()) if saying in text}
        added = tuple(self._terms[i] for i in sorted(found) if self._terms[i] not in text)
        return (f"{text} {' '.join(added)}" if added else text), added
