"""The sensitive-topic detector (lawsuits, police, media, regulators, safety, self-harm…): a rule of
the route stage (``service/pipeline/route.py``), read on normalised text before retrieval, with the
terms of the KB's ``resources/sensitive.yaml``."""

from __future__ import annotations

import copy
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import yaml

from indexer.normalize import normalize
from kb.errors import ConfigError


@dataclass(frozen=True)
class SensitiveMatch:
    group: str
    term: str


@dataclass(frozen=True)
class TermSpec:
    """One configured term: a regex, the wider phrases (``except:`` in sensitive.yaml) that make
    an occurrence of it harmless, and where it was written (``file:line``) for error messages."""

    term: str
    exceptions: tuple[str, ...] = ()
    where: str = ""


@dataclass(frozen=True)
class _Term:
    group: str
    term: str
    pattern: re.Pattern[str]
    exceptions: tuple[re.Pattern[str], ...]

    def hits(self, norm: str) -> bool:
        """Does the term occur somewhere no exception covers? Each occurrence is judged on its
        own: 电脑中毒了，孩子也食物中毒了 still hits."""
        return any(not self._excused(norm, m) for m in self.pattern.finditer(norm))

    def _excused(self, norm: str, occurrence: re.Match[str]) -> bool:
        """An exception covers the occurrence: a match of it starts at or before the occurrence
        and ends at or after it (服务器炸了 covers 炸了; 要炸了你们公司 is covered by nothing)."""
        start, end = occurrence.span()
        for exc in self.exceptions:
            for at in range(start + 1):
                m = exc.match(norm, at)
                if m is not None and m.end() >= end:
                    return True
        return False


# Groups a KB's own questions never turn off (``SensitiveDetector.for_kb``): a message about
# harming oneself or someone else goes to a person whatever the KB answers.
ALWAYS_SENSITIVE = frozenset({"self_harm", "threat"})
# Groups whose handoff still shows the shopper what to read while a person comes: someone who names a
# lawsuit, the police, the press or a regulator is escalating a dispute or a fraud, and the help
# center's dispute and anti-fraud rules answer much of it (被骗了去报案要带哪些证据). Not for harm to
# oneself or others, nor for a product that hurt someone: there a person answers first.
SUGGESTING_GROUPS = frozenset({"legal", "police", "media", "regulator"})


@dataclass(frozen=True)
class KBTopic:
    """A sensitive term that a KB's own FAQ questions use, so it is not an alarm for that KB."""

    group: str
    term: str
    entries: int  # how many of the KB's questions use it


class SensitiveDetector:
    """Configurable list of regular expressions, grouped (legal, police, media, safety …); a term
    may carry exceptions, the everyday phrases it occurs in (电脑中毒, 服务器炸了, 秒杀了)."""

    def __init__(self, groups: Mapping[str, Sequence[str | TermSpec]], where: str = "") -> None:
        terms = []
        for group, specs in groups.items():
            for raw in specs:
                spec = raw if isinstance(raw, TermSpec) else TermSpec(str(raw))
                terms.append(_compile_term(group, spec))
        if not terms:
            at = f"{where}: " if where else ""
            raise ConfigError(f"{at}the sensitive-term list is empty; give at least one term")
        self._use(terms)
        self.kb_topics: tuple[KBTopic, ...] = ()

    def _use(self, terms: list[_Term]) -> None:
        self._terms = terms
        self._any = _union([t.pattern for t in terms])

    def for_kb(self, questions: Iterable[str]) -> SensitiveDetector:
        """This detector for one KB: a term its own FAQ questions use (normalised ``questions``;
        a medical FAQ's 住院 or 中毒, a general one's 记者) is what that KB answers about, not an
        alarm, and is dropped, except in ALWAYS_SENSITIVE groups. The bundled help center's
        questions use none (its alternatives do, phrased as the cases it hands off)."""
        counts: dict[int, int] = {}
        for q in questions:
            if self._any is None or self._any.search(q):
                for i, t in enumerate(self._terms):
                    if t.group not in ALWAYS_SENSITIVE and t.hits(q):
                        counts[i] = counts.get(i, 0) + 1
        if not counts:
            return self
        out = copy.copy(self)
        out._use([t for i, t in enumerate(self._terms) if i not in counts])
        out.kb_topics = tuple(KBTopic(self._terms[i].group, self._terms[i].term, n) for i, n in sorted(counts.items()))
        return out

    @classmethod
    def from_file(cls, path: Path) -> SensitiveDetector:
        """Read ``sensitive.yaml``: group name → list of terms, each a regex or a mapping
        ``{term: regex, except: [regex, …]}``. Errors name the file and line."""
        return cls(_read_groups(path), where=str(path))

    @classmethod
    def from_terms(cls, terms: list[str]) -> SensitiveDetector:
        return cls({"configured": terms})

    def match(self, norm: str) -> SensitiveMatch | None:
        if self._any is not None and not self._any.search(norm):
            return None  # the common case, in one search instead of one per term (about 40 → 3 µs)
        for t in self._terms:
            if t.hits(norm):
                return SensitiveMatch(t.group, t.term)
        return None


def _pattern(text: str) -> str:
    # Plain terms are normalised like the text they match (Traditional → Simplified, width,
    # case); a term with regex escapes is kept as written (\D must stay \D).
    return text if "\\" in text else normalize(text)


def _compile_term(group: str, spec: TermSpec) -> _Term:
    """Compile one term and its exceptions; a ConfigError says which, and where, on bad input."""
    at = f"{spec.where}: " if spec.where else ""
    what = f"sensitive term {spec.term!r} in group {group!r}"
    if not spec.term.strip():
        raise ConfigError(f"{at}empty sensitive term in group {group!r}: it would match every message")
    try:
        pattern = re.compile(_pattern(spec.term))
    except re.error as exc:
        raise ConfigError(f"{at}{what} is not a valid regex: {exc}") from exc
    exceptions = []
    for text in spec.exceptions:
        if not text.strip():
            raise ConfigError(f"{at}{what} has an empty exception")
        source = _pattern(text)
        try:
            exceptions.append(re.compile(source))
        except re.error as exc:
            raise ConfigError(f"{at}exception {text!r} of {what} is not a valid regex: {exc}") from exc
        # An exception works only by covering an occurrence of the term; between two plain
        # strings that is checkable, and a typo would otherwise silently do nothing.
        if _is_literal(source) and _is_literal(pattern.pattern) and pattern.pattern not in source:
            raise ConfigError(f"{at}exception {text!r} of {what} does not contain the term, so it never applies")
    return _Term(group, spec.term, pattern, tuple(exceptions))


def _is_literal(pattern: str) -> bool:
    return re.escape(pattern) == pattern


_TERM_KEYS = ("term", "except")


def _read_groups(path: Path) -> dict[str, list[TermSpec]]:
    """Parse sensitive.yaml from its node tree, so every error can give ``file:line``."""
    try:
        root = yaml.compose(path.read_text("utf-8"), Loader=yaml.SafeLoader)
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not UTF-8 text; save the file as UTF-8") from exc
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = mark.line + 1 if mark is not None else 1
        raise ConfigError(f"{path}:{line}: invalid YAML: {getattr(exc, 'problem', None) or exc}") from exc
    if root is None or _is_null(root):
        return {}

    def at(node: yaml.Node) -> str:
        return f"{path}:{node.start_mark.line + 1}"

    if not isinstance(root, yaml.MappingNode):
        raise ConfigError(f"{at(root)}: expected a mapping of group names to lists of terms")
    groups: dict[str, list[TermSpec]] = {}
    first_line: dict[str, str] = {}
    for key, value in root.value:
        if not isinstance(key, yaml.ScalarNode) or not key.value.strip():
            raise ConfigError(f"{at(key)}: a group name must be a non-empty string")
        group = key.value
        if group in groups:
            raise ConfigError(f"{at(key)}: group {group!r} is given twice (first at {first_line[group]})")
        first_line[group] = at(key)
        if _is_null(value):
            groups[group] = []
        elif isinstance(value, yaml.SequenceNode):
            groups[group] = [_read_term(item, group, at) for item in value.value]
        else:
            raise ConfigError(f"{at(value)}: group {group!r} must be a list of terms")
    return groups


def _read_term(node: yaml.Node, group: str, at: Callable[[yaml.Node], str]) -> TermSpec:
    """One list item: a plain term, or ``{term: …, except: [… ]}``."""
    if isinstance(node, yaml.ScalarNode) and not _is_null(node):
        return TermSpec(node.value, where=at(node))
    if not isinstance(node, yaml.MappingNode):
        raise ConfigError(f"{at(node)}: a term in group {group!r} must be a string or {{term: …, except: […]}}")
    fields = {}
    for key, value in node.value:
        name = key.value if isinstance(key, yaml.ScalarNode) else None
        if name not in _TERM_KEYS:
            raise ConfigError(f"{at(key)}: unknown key {name!r} in a term of group {group!r}; use term and except")
        fields[name] = value
    term = fields.get("term")
    if not isinstance(term, yaml.ScalarNode) or _is_null(term):
        raise ConfigError(f"{at(node)}: a term in group {group!r} needs `term:` with a string")
    exc = fields.get("except")
    items: list[yaml.Node] = []
    if exc is not None and not _is_null(exc):
        if not isinstance(exc, yaml.SequenceNode):
            raise ConfigError(f"{at(exc)}: `except:` of term {term.value!r} must be a list of strings")
        items = list(exc.value)
    for item in items:
        if not isinstance(item, yaml.ScalarNode) or _is_null(item):
            raise ConfigError(f"{at(item)}: `except:` of term {term.value!r} must be a list of strings")
    return TermSpec(term.value, tuple(i.value for i in items), where=at(term))


def _is_null(node: yaml.Node) -> bool:
    return isinstance(node, yaml.ScalarNode) and node.tag == "tag:yaml.org,2002:null"


def _union(patterns: list[re.Pattern[str]]) -> re.Pattern[str] | None:
    """One pattern that matches wherever any of ``patterns`` does, or None where joining could
    change a pattern's meaning (group references are renumbered; inline flags must lead)."""
    if any(re.search(r"\\\d|\(\?P=|\(\?[aiLmsux]", p.pattern) for p in patterns):
        return None
    try:
        return re.compile("|".join(f"(?:{p.pattern})" for p in patterns))
    except re.error:
        return None
