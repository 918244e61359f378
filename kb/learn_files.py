"""The files ``kefu learn`` writes into a KB besides the journal: examples, alternatives, drafts."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import yaml

from kb.errors import KBError
from kb.learn_journal import Decision
from kb.loadstate import question_key
from kb.sidecar import DRAFTS, LEARNED

HOLDOUT = 5  # one message in HOLDOUT (by hash) is a test example only, never an alternative


@dataclass(frozen=True)
class Example:
    """One labelled message of ``learned.jsonl`` (the eval/data item format plus split and decision)."""

    id: str
    query: str
    expect: Literal["answer", "handoff"]
    relevant: tuple[str, ...]
    category: str
    split: Literal["dev", "test"]
    decision: str

    def to_json(self) -> dict[str, Any]:
        d: dict[str, Any] = {
            "id": self.id,
            "query": self.query,
            "relevant": list(self.relevant),
            "expect": self.expect,
            "tags": [],
            "category": self.category,
            "split": self.split,
            "decision": self.decision,
        }
        if self.expect == "handoff":
            d["reason"] = "low_confidence"
        return d


@dataclass(frozen=True)
class Draft:
    """A draft entry waiting in ``drafts/``."""

    path: str  # relative to the KB root
    id: str
    question: str
    messages: int
    decision: str


# --- labelled examples (learned.jsonl) -----------------------------------------------------------
def split_of(text: str) -> Literal["dev", "test"]:
    """Stable by the message's comparison key: the same message lands in the same split anywhere."""
    return "test" if int(hashlib.sha1(question_key(text).encode("utf-8")).hexdigest(), 16) % HOLDOUT == 0 else "dev"


def example_id(decision: str, text: str) -> str:
    return "L" + hashlib.sha1(f"{decision}\x1f{question_key(text)}".encode()).hexdigest()[:12]


def read_examples(root: Path) -> list[Example]:
    path = root / LEARNED
    if not path.is_file():
        return []
    out = []
    for n, line in enumerate(path.read_text("utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            d = json.loads(line)
            out.append(
                Example(
                    str(d["id"]),
                    str(d["query"]),
                    d["expect"],
                    tuple(d.get("relevant", ())),
                    str(d.get("category", "")),
                    d["split"],
                    str(d["decision"]),
                )
            )
        except (ValueError, KeyError, TypeError) as exc:
            raise KBError(f"{path}:{n}: invalid learned example ({exc})") from exc
    return out


def examples_text(examples: Sequence[Example]) -> str | None:
    """The text of ``learned.jsonl`` holding ``examples`` (None: no examples, remove the file)."""
    return "".join(json.dumps(e.to_json(), ensure_ascii=False) + "\n" for e in examples) or None


# --- alternatives: the sidecar and in-place YAML edits -------------------------------------------
def parse_sidecar(text: str | None) -> dict[str, list[str]]:
    """The sidecar's alternatives by entry id (empty when there is no sidecar)."""
    if not text:
        return {}
    data = yaml.safe_load(text) or {}
    alts = data.get("alternatives") or {}
    return {str(k): [str(t) for t in v] for k, v in alts.items()}


def sidecar_text(data: dict[str, list[str]], old: str | None = None) -> str | None:
    """The sidecar's text for ``data`` (None: nothing left, remove the file). The comment lines
    that open the ``old`` text are kept (a curated sidecar says what it holds); a new one gets
    kefu learn's."""
    data = {k: v for k, v in data.items() if v}
    if not data:
        return None
    kept = []
    for line in (old or "").splitlines(keepends=True):
        if not line.startswith("#"):
            break
        kept.append(line if line.endswith("\n") else line + "\n")
    head = "".join(kept) or (
        "# Alternative questions learned from shoppers' messages (kefu learn), by entry id.\n"
        "# kefu adds them to the entries of this KB; the FAQ table itself is never rewritten.\n"
    )
    # in the file's order (a new id last), so a curated sidecar's diff shows only what was learned
    return head + yaml.safe_dump({"alternatives": data}, allow_unicode=True, sort_keys=False, width=10_000)


def _alt_node(text: str, entry_id: str) -> yaml.SequenceNode | None:
    """The ``alt_questions`` block-list node of ``entry_id`` in a kefu FAQ file, or None."""
    try:
        doc = yaml.compose(text)
    except yaml.YAMLError:
        return None
    if not isinstance(doc, yaml.MappingNode):
        return None
    for k, v in doc.value:
        if k.value != "entries" or not isinstance(v, yaml.SequenceNode):
            continue
        for item in v.value:
            if not isinstance(item, yaml.MappingNode):
                continue
            fields = {kk.value: vv for kk, vv in item.value}
            if getattr(fields.get("id"), "value", None) == entry_id:
                alts = fields.get("alt_questions")
                if isinstance(alts, yaml.SequenceNode) and not alts.flow_style and alts.value:
                    return alts
                return None
    return None


def _entry_alts(text: str, entry_id: str) -> list[str] | None:
    data = yaml.safe_load(text) or {}
    for e in data.get("entries") or ():
        if isinstance(e, dict) and e.get("id") == entry_id:
            return [str(a) for a in e.get("alt_questions") or ()]
    return None


def yaml_add_alternative(text: str, entry_id: str, alt: str) -> str | None:
    """``text`` with ``alt`` appended to the entry's block list, formatting and comments kept; None
    when the file cannot be edited that way (checked by parsing the result)."""
    node = _alt_node(text, entry_id)
    if node is None:
        return None
    lines = text.splitlines(keepends=True)
    first, last = node.value[0], node.value[-1]
    if first.start_mark.line != first.end_mark.line or last.start_mark.line != last.end_mark.line:
        return None  # multi-line items: leave the file alone
    prefix = lines[first.start_mark.line][: first.start_mark.column]
    if prefix.strip() != "-":
        return None
    item = yaml.safe_dump([alt], allow_unicode=True, width=10_000).strip()[2:]  # quoted as YAML needs it
    at = last.end_mark.line + 1
    tail = lines[at - 1]
    if not tail.endswith("\n"):
        lines[at - 1] = tail + "\n"
    new = "".join([*lines[:at], f"{prefix}{item}\n", *lines[at:]])
    before = _entry_alts(text, entry_id)
    return new if before is not None and _entry_alts(new, entry_id) == [*before, alt] else None


def yaml_remove_alternative(text: str, entry_id: str, alt: str) -> str | None:
    """``text`` without the entry's alternative ``alt`` (its one line); None when it is not there."""
    node = _alt_node(text, entry_id)
    if node is None:
        return None
    lines = text.splitlines(keepends=True)
    for item in node.value:
        if item.value == alt and item.start_mark.line == item.end_mark.line:
            new = "".join(lines[: item.start_mark.line] + lines[item.start_mark.line + 1 :])
            before = _entry_alts(text, entry_id) or []
            after = list(before)
            after.remove(alt)
            return new if _entry_alts(new, entry_id) == after and after else None
    return None


# --- drafts --------------------------------------------------------------------------------------
def draft_text(d: Decision) -> str:
    """The draft entry stub a ``new_entry`` decision writes into ``drafts/``."""
    stub = {
        "entries": [
            {
                "id": f"draft-{d.id.lower()}",
                "category": d.category or "待分类",
                "question": d.messages[0],
                "alt_questions": list(d.messages[1:]),
                "answer": "",
            }
        ]
    }
    head = (
        f"# Draft entry from decision {d.id} ({d.who}, {d.at}): shoppers asked this and the KB has no answer.\n"
        "# Not loaded while it is in drafts/. Write the question and answer (and at least three alternative\n"
        "# questions), give it an id of its own, then move the file into the KB (e.g. faq/) and run kefu build.\n"
        f"# decision: {d.id}\n"
    )
    return head + yaml.safe_dump(stub, allow_unicode=True, sort_keys=False, width=10_000)


def list_drafts(root: Path) -> list[Draft]:
    """Draft entries waiting in ``drafts/`` (``kefu kb check`` lists them)."""
    folder = root / DRAFTS
    out = []
    for p in sorted(folder.glob("*.y*ml")) if folder.is_dir() else ():
        text = p.read_text("utf-8")
        decision = next((ln.split(":", 1)[1].strip() for ln in text.splitlines() if ln.startswith("# decision:")), "")
        try:
            entries = (yaml.safe_load(text) or {}).get("entries") or [{}]
        except yaml.YAMLError:
            entries = [{}]
        e = entries[0] if isinstance(entries[0], dict) else {}
        n = 1 + len(e.get("alt_questions") or ())
        out.append(Draft(str(p.relative_to(root)), str(e.get("id", "")), str(e.get("question", "")), n, decision))
    return out
