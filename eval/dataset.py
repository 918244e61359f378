"""The labelled evaluation set: items, dev/test splits, independence check."""

from __future__ import annotations

import hashlib
import json
import re
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from kb.errors import ConfigError, KBError
from kb.schema import KnowledgeBase, entry_slug

DATA_DIR = Path(__file__).resolve().parent / "data"
SPLITS = ("dev", "test")
# The rules slice (#22): shoppers' questions whose best answer is a rules clause (relevant: clause
# unit ids, <doc-id>.<n>), kept apart from the FAQ splits: load_split("rules_dev"), ("rules_test").
RULES_SPLITS = ("rules_dev", "rules_test")
# Shoppers' questions written by someone who had seen neither the alternatives nor the other splits, only
# 80 entries' own questions and answers (2 each): how the quality carries to wording nobody here wrote.
# A test set: measured, never tuned on, and not in "all".
UNSEEN_SPLIT = "unseen"
TAGS = ("colloquial", "typo", "traditional", "long", "english_mixed", "multi_intent", "short", "elliptical")
EXPECTS = ("answer", "handoff", "clarify")


@dataclass(frozen=True)
class EvalItem:
    id: str
    query: str
    relevant: tuple[str, ...]
    expect: str
    reason: str | None
    tags: tuple[str, ...]
    category: str
    context: str | None = None

    @property
    def in_scope(self) -> bool:
        return self.expect == "answer"

    def to_json(self) -> dict[str, object]:
        d = asdict(self)
        d["relevant"], d["tags"] = list(self.relevant), list(self.tags)
        return {k: v for k, v in d.items() if v is not None}


def parse_items(lines: Iterable[str], source: str, strict: bool = True) -> list[EvalItem]:
    """One EvalItem per JSON line. ``strict`` (kefu's own labelled set) asks for every field and
    known tags; a user's set may leave out ``id`` (the file and line), ``expect`` (``answer`` when
    it names relevant entries, else ``handoff``), the ``reason`` of a handoff (``low_confidence``:
    the KB has no answer) and use tags of its own."""
    items = []
    stem = Path(source).stem
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            r = json.loads(line)
            if not isinstance(r, dict):
                raise TypeError("a line must be a JSON object")
            relevant = tuple(str(x) for x in r.get("relevant") or ())
            expect = str(r["expect"]) if strict or "expect" in r else ("answer" if relevant else "handoff")
            reason = r.get("reason")
            if not strict and reason is None and expect == "handoff":
                reason = "low_confidence"
            item = EvalItem(
                id=str(r["id"]) if strict or "id" in r else f"{stem}-{n}",
                query=str(r["query"]),
                relevant=relevant,
                expect=expect,
                reason=reason,
                tags=tuple(r.get("tags", [])),
                category=str(r.get("category", "")),
                context=r.get("context"),
            )
        except KeyError as exc:
            need = "id, query, expect" if strict else "query, and relevant (entry ids) or expect"
            raise KBError(f"{source}:{n}: eval record without {exc}; each line needs {need}") from exc
        except (ValueError, TypeError) as exc:
            raise KBError(f"{source}:{n}: invalid eval record ({exc})") from exc
        if item.expect not in EXPECTS:
            raise KBError(f"{source}:{n}: expect {item.expect!r} must be one of {EXPECTS}")
        if item.expect == "answer" and not item.relevant:
            raise KBError(f"{source}:{n}: expect answer needs the relevant entry ids (relevant: [...])")
        bad = set(item.tags) - set(TAGS)
        if strict and bad:
            raise KBError(f"{source}:{n}: unknown tags {sorted(bad)}; allowed: {', '.join(TAGS)}")
        items.append(item)
    return items


def load_split(name: str, data_dir: Path = DATA_DIR) -> list[EvalItem]:
    known = (*SPLITS, *RULES_SPLITS, UNSEEN_SPLIT, "all")
    if name not in known:
        raise ConfigError(f"split {name!r} is unknown; allowed: {', '.join(known)}")
    names = SPLITS if name == "all" else (name,)
    out: list[EvalItem] = []
    for n in names:
        path = data_dir / f"{n}.jsonl"
        if not path.is_file():
            raise KBError(f"no eval split at {path}")
        # kefu's own set is held to every field; a user's (--data) may leave some out
        out.extend(parse_items(path.read_text("utf-8").splitlines(), str(path), strict=data_dir == DATA_DIR))
    return out


def resolve_labels(items: Sequence[EvalItem], aliases: Mapping[str, str]) -> list[EvalItem]:
    """``items`` with every relevant id renamed to the entry it names (``Index.aliases``): a
    merged-away entry's id to the entry that replaced it, an imported row's original id
    (``FAQ_12``, ``退货-01``) to its slug; duplicates dropped in order. A labelled set stays valid
    when the KB merges two entries, and a user's labels may use the ids of their own export."""
    out = []
    for it in items:
        # a row merged into another is known by its slug (``replaces``), not its original id
        rel = tuple(dict.fromkeys(aliases.get(r) or aliases.get(entry_slug(r)) or r for r in it.relevant))
        out.append(it if rel == it.relevant else replace(it, relevant=rel))
    return out


def stable_hash(text: str) -> str:
    """SHA-1 hex of ``text``: an order or fold assignment that is the same on every machine."""
    return hashlib.sha1(text.encode("utf-8")).hexdigest()


def stratified_split(items: list[EvalItem], seed: str = "kefu") -> dict[str, list[EvalItem]]:
    """Deterministic ~50/50 split, stratified by category and first tag (the stratum)."""
    strata: dict[tuple[str, str, str], list[EvalItem]] = defaultdict(list)
    for it in items:
        strata[(it.category, it.reason or it.expect, it.tags[0] if it.tags else "")].append(it)
    out: dict[str, list[EvalItem]] = {"dev": [], "test": []}
    offset = 0
    for key in sorted(strata):
        group = sorted(strata[key], key=lambda it: stable_hash(f"{seed}:{it.id}"))
        for i, it in enumerate(group):
            out["dev" if (i + offset) % 2 == 0 else "test"].append(it)
        offset += len(group) % 2  # alternate which side gets an odd stratum's extra item
    return out


def write_split(items: list[EvalItem], path: Path) -> None:
    path.write_text(
        "".join(json.dumps(it.to_json(), ensure_ascii=False) + "\n" for it in sorted(items, key=lambda i: i.id)),
        "utf-8",
    )


def _bigrams(s: str) -> set[str]:
    s = re.sub(r"[\s\W_]+", "", s.lower())
    return {s[i : i + 2] for i in range(len(s) - 1)} or ({s} if s else set())


def independence(items: list[EvalItem], kb: KnowledgeBase) -> dict[str, float | int]:
    """Highest character-bigram Jaccard of each in-scope query against its entries' questions."""
    scores = []
    for it in items:
        if not it.in_scope:
            continue
        cands = [q for rid in it.relevant if (e := kb.entry(rid)) for q in (e.question, *e.alt_questions)]
        qb = _bigrams(it.query)
        best = max((len(qb & _bigrams(c)) / max(1, len(qb | _bigrams(c))) for c in cands), default=0.0)
        scores.append(best)
    n = len(scores)
    above = sum(s > 0.5 for s in scores)
    return {
        "in_scope": n,
        "above_0.5": above,
        "share_above_0.5": round(above / n, 4) if n else 0.0,
        "mean_max_jaccard": round(sum(scores) / n, 4) if n else 0.0,
    }


def _jaccard_best(texts: list[str], queries: list[str]) -> list[float]:
    """For each text, its highest character-bigram Jaccard against any of ``queries`` (postings:
    only queries that share a bigram are scored)."""
    qgrams = [_bigrams(q) for q in queries]
    postings: dict[str, list[int]] = defaultdict(list)
    for i, g in enumerate(qgrams):
        for b in g:
            postings[b].append(i)
    best = []
    for t in texts:
        tg = _bigrams(t)
        shared: dict[int, int] = defaultdict(int)
        for b in tg:
            for i in postings.get(b, ()):
                shared[i] += 1
        best.append(max((n / (len(tg) + len(qgrams[i]) - n) for i, n in shared.items()), default=0.0))
    return best


def phrasing_overlap(kb_texts: list[str], splits: dict[str, list[str]]) -> dict[str, dict[str, float | int]]:
    """The reverse of ``independence``: how close the KB's own questions and alternatives come to
    each split's queries. A KB edited toward one split shows up as more near-copies (Jaccard >
    0.5) or a higher mean against it than against the other."""
    out: dict[str, dict[str, float | int]] = {}
    for name, queries in splits.items():
        best = _jaccard_best(kb_texts, queries)
        n = len(best)
        out[name] = {
            "kb_texts": n,
            "above_0.5": sum(b > 0.5 for b in best),
            "mean_max_jaccard": round(sum(best) / n, 4) if n else 0.0,
        }
    return out
