"""Rule detectors run on normalised text before retrieval: human requests, sensitive topics,
greetings, and short follow-ups that need the session's previous question."""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import yaml

from indexer.normalize import normalize
from kb.errors import ConfigError

# Words for "a person" (with the typos and homophones shoppers type: 仁工, 人共, 人宫).
_HUMAN = r"(?:人工|仁工|人共|人宫|真人|活人|人工坐席|坐席|人类)"
# What follows "人工" when a shopper asks *about* manual handling or the queue, not for a person.
_NOT_A_REQUEST_AFTER = r"(?!审核|审批|复核|智能|服务费|成本|客服?(?:排|要等|等多久|几点|什么时候|上班|下班|时间))"
_REQUEST_PATTERNS = [
    rf"(?:转|專|专|传|接|找|要|叫|换|给我|帮我|请|麻烦|让|来个?)\s*(?:个|一下|到|一个|给)?\s*{_HUMAN}{_NOT_A_REQUEST_AFTER}",
    rf"^{_HUMAN}(?:客服|服务)?(?:[!！。，,\s]|$)",
    rf"^(?:{_HUMAN})+$",
    rf"(?:有没有|有无|还有没有|喂喂?有没有|在不在)\s*(?:个)?\s*{_HUMAN}",
    rf"{_HUMAN}(?:客服|服务)?\s*(?:呢|在哪|在吗|快来|来|出来)",
    r"(?:别|不要|不想|不跟|不和|不用)\s*(?:让)?\s*(?:你|这个)?\s*(?:机器人?|智能客服|自动回复|小蜜|ai)",
    r"(?:换|找|叫)\s*(?:个|一个)?\s*(?:人|客服)\s*(?:来|跟我|和我|出来)",
    r"(?:找|叫|让)\s*(?:你们|你们的)?\s*(?:客服)?\s*(?:主管|经理|领导|负责人|值班的?客服)",
    r"\b(?:human|real person|live agent|real human|talk to (?:a |an )?(?:person|agent|human)|agent please)\b",
    r"^(?:rg|zrg|转rg)$",
]
_REQUEST = re.compile("|".join(f"(?:{p})" for p in _REQUEST_PATTERNS))

_PUNCT = re.compile(r"[\s\W_]+", re.UNICODE)
# Particles and filler that carry no request: stripped before matching greetings.
_PARTICLES = re.compile(r"[呀啊哈呢吧嘛哦喔噢哇啦滴的亲了嗯~～]+")
_GREETING_CORE = re.compile(
    r"^(?:你好|您好|hi|hello|hey|there|哈喽|哈啰|哈罗|嗨|午安|晚安|在吗|在么|在不在|有人吗|有人在吗|早|早上好|上午好|中午好|下午好|晚上好|"
    r"谢谢|多谢|感谢|谢了|thx|thanks|thankyou|好的|好|明白了|明白|知道了|ok|okay|收到|懂了|辛苦了|辛苦|拜拜|再见|bye)+$"
)
_GREETING_WORDS = r"你好|您好|hi|hello|哈喽|嗨|在吗|在么|在不在|请问一下|请问|问一下|问下|打扰一下|麻烦问下"
_GREETING_TAIL = r"[呀啊哈呢~～,，。!！?？\s]"
# Greetings go with whatever follows them; a form of address (亲, 客服, 小蜜, 小二) only when a
# pause or another greeting follows it. Otherwise it is the subject of the question: 客服电话多少,
# 小蜜是啥, 客服说价格挂错了 must keep it.
_GREETING_PREFIX = re.compile(
    rf"^(?:(?:{_GREETING_WORDS}){_GREETING_TAIL}*|(?:亲|客服|小蜜|小二)(?:{_GREETING_TAIL}+|(?={_GREETING_WORDS})))"
)
_FOLLOWUP = re.compile(r"^(?:那|那么|那要是|要是|如果|还有|另外|然后|其他的?|可是|但是|那如果)")
# Pronouns and demonstratives that point back at the previous message ('这样改的话要另外掏钱吗').
_ANAPHORA = re.compile(r"这样|这个|那个|这种|那种|这笔|那笔|这单|那单|他|她|它")
# Longer messages carry their own context. 12 missed dev follow-ups of 13–16 characters; at 20,
# with the anaphora above, the gate fires for 12 of dev's 15 follow-ups (4 before).
FOLLOWUP_MAX_CHARS = 20


def is_user_request(norm: str) -> bool:
    """Does the shopper ask for a human agent? ``norm`` must already be normalised."""
    return bool(_REQUEST.search(norm))


@functools.lru_cache(maxsize=8)
def _greeting_keys(extra: tuple[str, ...]) -> frozenset[str]:
    """The configured greetings, reduced like a message is (computed once per list)."""
    return frozenset(_PARTICLES.sub("", _PUNCT.sub("", normalize(x))) for x in extra)


def is_greeting(norm: str, extra: Iterable[str] = ()) -> bool:
    """A message that is only a greeting or thanks (no question in it)."""
    bare = _PUNCT.sub("", norm)
    core = _PARTICLES.sub("", bare)
    if not bare:
        return False
    # Match before and after dropping particles: 哈 is a particle in 好哈 but part of 哈喽.
    if _GREETING_CORE.match(bare) or (core and _GREETING_CORE.match(core)):
        return True
    return bool(core) and core in _greeting_keys(tuple(extra))


def strip_greeting(norm: str) -> str:
    """Drop a leading greeting/politeness prefix so retrieval sees the question ('你好，怎么退款')."""
    out = norm
    for _ in range(3):
        new = _GREETING_PREFIX.sub("", out)
        if new == out:
            break
        out = new
    return out or norm


def is_followup(norm: str) -> bool:
    """A message that may continue the previous question: very short ('运费呢'), or short and
    opening like a follow-up ('那运费呢') or pointing back ('这样改的话要另外掏钱吗'). Only a gate:
    the answerer still checks that the context helps (``Answerer._use_context``)."""
    if len(norm) <= 6:
        return True
    return len(norm) <= FOLLOWUP_MAX_CHARS and bool(_FOLLOWUP.match(norm) or _ANAPHORA.search(norm))


@dataclass(frozen=True)
class SensitiveMatch:
    group: str
    term: str


class SensitiveDetector:
    """Configurable list of regular expressions, grouped (legal, police, media, safety …)."""

    def __init__(self, groups: dict[str, list[str]]) -> None:
        self._patterns: list[tuple[str, str, re.Pattern[str]]] = []
        for group, terms in groups.items():
            for term in terms:
                # Plain terms are normalised like the text they match (Traditional → Simplified,
                # width, case); a term with regex escapes is kept as written (\D must stay \D).
                pattern = str(term) if "\\" in str(term) else normalize(str(term))
                try:
                    self._patterns.append((group, term, re.compile(pattern)))
                except re.error as exc:
                    raise ConfigError(
                        f"sensitive term {term!r} in group {group!r} is not a valid regex: {exc}"
                    ) from exc
        if not self._patterns:
            raise ConfigError("the sensitive-term list is empty; give at least one term")
        self._any = _union([p for _, _, p in self._patterns])

    @classmethod
    def from_file(cls, path: Path) -> SensitiveDetector:
        data = yaml.safe_load(path.read_text("utf-8")) or {}
        return cls({str(k): [str(t) for t in (v or [])] for k, v in data.items()})

    @classmethod
    def from_terms(cls, terms: list[str]) -> SensitiveDetector:
        return cls({"configured": terms})

    def match(self, norm: str) -> SensitiveMatch | None:
        if self._any is not None and not self._any.search(norm):
            return None  # the common case, in one search instead of one per term (about 40 → 3 µs)
        for group, term, pattern in self._patterns:
            if pattern.search(norm):
                return SensitiveMatch(group, term)
        return None


def _union(patterns: list[re.Pattern[str]]) -> re.Pattern[str] | None:
    """One pattern that matches wherever any of ``patterns`` does, or None where joining could
    change a pattern's meaning (group references are renumbered; inline flags must lead)."""
    if any(re.search(r"\\\d|\(\?P=|\(\?[aiLmsux]", p.pattern) for p in patterns):
        return None
    try:
        return re.compile("|".join(f"(?:{p.pattern})" for p in patterns))
    except re.error:
        return None
