"""Wording rules that a KB can make its own topic (``OrderRules``, ``MerchantRules``): a rule that the
KB's own FAQ questions match is off for that KB. A wallet's FAQ that asks 我的积分还剩多少, or a KB for
shops that asks 我们店铺怎样开通花呗收款, answers such messages rather than handing them off."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Self


@dataclass(frozen=True)
class KBRules:
    """The rules off for one KB (``off``), and how many of its questions each matched (``kb_topics``)."""

    off: frozenset[str] = frozenset()
    kb_topics: tuple[tuple[str, int], ...] = ()

    @staticmethod
    def first_rule(norm: str, off: frozenset[str]) -> str | None:
        """The first wording rule not in ``off`` that ``norm`` (normalised) matches."""
        raise NotImplementedError

    @classmethod
    def for_kb(cls, questions: Iterable[str]) -> Self:
        """Rules off for a KB whose FAQ questions (normalised) they match. The first rule that fires
        may hide a later one, so the questions it matched are read again with it off until none fires."""
        counts: dict[str, int] = {}
        pending = list(questions)
        while pending:
            off = frozenset(counts)
            fired = [(q, rule) for q in pending if (rule := cls.first_rule(q, off)) is not None]
            for _, rule in fired:
                counts[rule] = counts.get(rule, 0) + 1
            pending = [q for q, _ in fired]  # only these could match another rule once theirs is off
        return cls(frozenset(counts), tuple(sorted(counts.items())))
