"""Resolutions that teach: an operator's decisions on unserved messages, written back into the KB.

For a handoff ticket or a list of shoppers' messages an operator decides one of:

- ``attach`` to an existing entry: the messages become alternative questions of it (in the
  entry's YAML file for kefu's own format; in the sidecar ``alternatives.yaml``, keyed by entry
  id, for imported tables, so the user's file is never rewritten) and labelled ``answer``
  examples;
- ``out_of_scope``: labelled ``handoff`` examples (no answer in the KB, hand off);
- ``new_entry``: a draft entry stub in ``drafts/`` (listed by ``kefu kb check``, not loaded until
  it is filled in and moved into the KB);
- ``dismiss``: recorded, nothing else;
- ``confirm``: the entry kefu answered with was right (served traffic a shopper did not vote
  down): labelled ``answer`` examples only, never alternatives. Without them the labelled
  examples are all failures, and neither the recalibration nor the before/after check would see
  the traffic kefu already serves, which a new alternative can break (measured by eval/learning.py).

Decisions are recorded (who, when, what) in ``learn-journal.jsonl``; ``kefu learn`` applies the
pending ones (``plan_apply`` → ``write_plan``) and ``undo`` reverts one. Labelled examples go to
``learned.jsonl``, split dev/test by a stable hash of the message: one in ``HOLDOUT`` is a test
example and is *not* added as an alternative, so learning can be checked on messages the index has
never seen. Every file is replaced atomically (temp file + rename) and everything happens under
one lock per KB folder (``kb_lock``), so two operators cannot resolve or apply one item twice.
"""

from __future__ import annotations

import contextlib
import dataclasses
import getpass
import hashlib
import json
import os
import time
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import yaml

from kb.errors import ConfigError, KBError, NotFoundError
from kb.loader import DRAFTS, JOURNAL, LEARNED, SIDECAR, question_key
from kb.locks import exclusive
from kb.schema import MIN_ALT, KnowledgeBase

Action = Literal["attach", "out_of_scope", "new_entry", "dismiss", "confirm"]
ACTIONS: tuple[Action, ...] = ("attach", "out_of_scope", "new_entry", "dismiss", "confirm")
LABELLED: tuple[Action, ...] = ("attach", "out_of_scope", "confirm")  # actions that write examples
NEEDS_ENTRY: tuple[Action, ...] = ("attach", "confirm")
Status = Literal["pending", "applied", "undone"]
LOCK = ".learn.lock"
HOLDOUT = 5  # one message in HOLDOUT (by hash) is a test example only, never an alternative
LOCK_WAIT_S = 10.0  # a resolution waits this long for a running `kefu learn`, then says so
MAX_MESSAGES = 200  # one decision; a gap cluster is a few dozen messages at most


@dataclass(frozen=True)
class Decision:
    """One operator decision on one item (a ticket or a list of messages)."""

    id: str
    item: str  # "ticket:<id>" or "messages:<hash>": one live decision per item
    action: Action
    messages: tuple[str, ...]
    entry: str | None  # attach: the entry's id
    category: str | None  # new_entry: where the draft goes
    who: str
    at: str

    def to_json(self) -> dict[str, Any]:
        return {**dataclasses.asdict(self), "messages": list(self.messages)}

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Decision:
        return cls(
            str(d["id"]),
            str(d["item"]),
            d["action"],
            tuple(d["messages"]),
            d.get("entry"),
            d.get("category"),
            str(d["who"]),
            str(d["at"]),
        )


@dataclass(frozen=True)
class Change:
    """What applying one decision writes; the journal keeps it, so ``undo`` removes exactly this."""

    decision: str
    alternatives: tuple[tuple[str, str, str], ...] = ()  # (entry id, text, file it went to)
    examples: tuple[str, ...] = ()  # ids of the lines in learned.jsonl
    draft: str | None = None  # relative path of the draft stub
    skipped: tuple[tuple[str, str], ...] = ()  # (message, why it is no alternative)

    def to_json(self) -> dict[str, Any]:
        return {
            "decision": self.decision,
            "alternatives": [list(a) for a in self.alternatives],
            "examples": list(self.examples),
            "draft": self.draft,
            "skipped": [list(s) for s in self.skipped],
        }

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Change:
        return cls(
            str(d["decision"]),
            tuple((str(a[0]), str(a[1]), str(a[2])) for a in d.get("alternatives", ())),
            tuple(d.get("examples", ())),
            d.get("draft"),
            tuple((str(s[0]), str(s[1])) for s in d.get("skipped", ())),
        )


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
class Plan:
    """Applying the pending decisions: new file contents (None: delete) and what each decision adds."""

    files: dict[str, str | None]  # path relative to the KB root → new text
    changes: tuple[Change, ...]

    @property
    def alternatives(self) -> int:
        return sum(len(c.alternatives) for c in self.changes)

    @property
    def examples(self) -> int:
        return sum(len(c.examples) for c in self.changes)

    @property
    def drafts(self) -> int:
        return sum(c.draft is not None for c in self.changes)


@dataclass(frozen=True)
class DecisionState:
    decision: Decision
    status: Status
    change: Change | None  # applied: what was written


@dataclass(frozen=True)
class Draft:
    path: str  # relative to the KB root
    id: str
    question: str
    messages: int
    decision: str


# --- atomic files and the lock -------------------------------------------------------------------
def atomic_write(path: Path, text: str | None) -> None:
    """Replace ``path`` with ``text`` (None: remove it) so a reader, or a crash, sees the old file
    or the new one, never half of one: temp file in the same folder, fsync, rename."""
    for stale in path.parent.glob(f".{path.name}.*.tmp"):  # left by a writer killed mid-write (we hold the lock)
        stale.unlink(missing_ok=True)
    if text is None:
        path.unlink(missing_ok=True)
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent / f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:6]}.tmp"
    try:
        with tmp.open("w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


@contextlib.contextmanager
def kb_lock(root: Path, wait_s: float = LOCK_WAIT_S) -> Iterator[None]:
    """Exclusive per KB folder across processes (the kernel's lock: it goes with a crashed process)."""

    def busy(holder: str) -> ConfigError:
        return ConfigError(
            f"the knowledge base {root} is busy ({holder}, e.g. `kefu learn`); try again when it is done"
        )

    with exclusive(root / LOCK, busy, wait_s):
        yield


# --- the journal ---------------------------------------------------------------------------------
def now_iso() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def whoami() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # no passwd entry in a container
        return "unknown"


def read_journal(root: Path) -> list[dict[str, Any]]:
    """Every record, oldest first. The file is only ever replaced whole, so every line is complete."""
    path = root / JOURNAL
    if not path.is_file():
        return []
    out = []
    for n, line in enumerate(path.read_text("utf-8").splitlines(), 1):
        if line.strip():
            try:
                out.append(json.loads(line))
            except ValueError as exc:
                raise KBError(f"{path}:{n}: not a journal record ({exc}); restore the file from a backup") from exc
    return out


def append_journal(root: Path, *records: dict[str, Any]) -> None:
    """Append records (records are never edited; the file is rewritten whole, atomically). Hold ``kb_lock``."""
    path = root / JOURNAL
    old = path.read_text("utf-8") if path.is_file() else ""
    new = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records)
    atomic_write(path, old + new)


def states(root: Path) -> dict[str, DecisionState]:
    """Each decision's status from the journal: pending until applied, then applied until undone."""
    out: dict[str, DecisionState] = {}
    for r in read_journal(root):
        event, did = r.get("event"), r.get("decision")
        if event == "decided":
            d = Decision.from_json(r["record"])
            out[d.id] = DecisionState(d, "pending", None)
        elif did in out and event == "applied":
            out[did] = DecisionState(out[did].decision, "applied", Change.from_json(r["change"]))
        elif did in out and event == "undone":
            out[did] = DecisionState(out[did].decision, "undone", out[did].change)
    return out


def interrupted_changes(root: Path) -> dict[str, Change]:
    """Changes announced (``applying``) by a learn run that never finished: what may already be
    in the KB files although the decision is still pending (a crash between the writes and the
    index swap). Re-applying counts those texts as its own instead of as already there."""
    out: dict[str, Change] = {}
    for r in read_journal(root):
        if r.get("event") == "applying":
            c = Change.from_json(r["change"])
            out[c.decision] = c
        elif r.get("event") in ("applied", "undone"):
            out.pop(str(r.get("decision")), None)
    return out


# --- resolving -----------------------------------------------------------------------------------
def item_key(messages: Sequence[str], ticket: str | None = None) -> str:
    if ticket is not None:
        return f"ticket:{ticket}"
    keys = sorted({question_key(m) for m in messages})
    return "messages:" + hashlib.sha1("\x1f".join(keys).encode("utf-8")).hexdigest()[:16]


def ticket_messages(tickets_db: Path, ticket_id: str) -> tuple[str, ...]:
    """The (masked) message of a handoff ticket, read through the ticket store."""
    from service.tickets import TicketStore  # the service layer, only when a ticket is named

    if not tickets_db.is_file():
        raise NotFoundError(f"no tickets database at {tickets_db}; set KEFU_TICKETS_DB")
    found = [t for t in TicketStore(tickets_db).list(limit=1_000_000) if t.id == ticket_id]
    if not found:
        raise NotFoundError(f"no ticket {ticket_id!r} in {tickets_db}; see `kefu handoffs list`")
    return (found[0].query,)


def decide(
    kb: KnowledgeBase,
    action: Action,
    messages: Sequence[str],
    *,
    entry: str | None = None,
    ticket: str | None = None,
    category: str | None = None,
    who: str | None = None,
) -> Decision:
    """Record an operator's decision (pending until ``kefu learn`` applies it). One live decision
    per item: a second one is refused until the first is undone."""
    if action not in ACTIONS:
        raise ConfigError(f"action {action!r} is unknown; allowed: {', '.join(ACTIONS)}")
    texts = tuple(dict.fromkeys(m.strip() for m in messages if m.strip()))
    if not texts:
        raise ConfigError("no messages to resolve: give --ticket or at least one --message")
    if len(texts) > MAX_MESSAGES:
        raise ConfigError(f"{len(texts)} messages in one decision; at most {MAX_MESSAGES}")
    target = None
    if action in NEEDS_ENTRY:
        if not entry:
            raise ConfigError(f"{action} needs the entry that answers the messages (its id)")
        found = kb.entry(entry)
        if found is None:
            raise NotFoundError(f"no FAQ entry {entry!r} in {kb.root}; `kefu ask` shows the ids of candidates")
        target = found.id
    elif entry:
        raise ConfigError(f"only attach and confirm take an entry; {action} does not")
    key = item_key(texts, ticket)
    d = Decision(
        id="D" + uuid.uuid4().hex[:12],
        item=key,
        action=action,
        messages=texts,
        entry=target,
        category=category,
        who=who or whoami(),
        at=now_iso(),
    )
    with kb_lock(kb.root):
        for s in states(kb.root).values():
            if s.decision.item == key and s.status != "undone":
                prev = s.decision
                raise ConfigError(
                    f"{key} was already resolved ({prev.action}) by {prev.who} at {prev.at} as decision "
                    f"{prev.id} ({s.status}); `kefu learn undo {prev.id}` first to decide again"
                )
        append_journal(kb.root, {"event": "decided", "decision": d.id, "who": d.who, "at": d.at, "record": d.to_json()})
    return d


# --- applying ------------------------------------------------------------------------------------
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


def _examples_text(examples: Sequence[Example]) -> str | None:
    return "".join(json.dumps(e.to_json(), ensure_ascii=False) + "\n" for e in examples) or None


class _Files:
    """The KB files a plan touches: read once, edited in memory, written by ``write_plan``."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.text: dict[str, str | None] = {}

    def get(self, rel: str) -> str | None:
        if rel not in self.text:
            p = self.root / rel
            self.text[rel] = p.read_text("utf-8") if p.is_file() else None
        return self.text[rel]

    def put(self, rel: str, text: str | None) -> None:
        self.text[rel] = text

    def changed(self) -> dict[str, str | None]:
        out = {}
        for rel, text in self.text.items():
            p = self.root / rel
            old = p.read_text("utf-8") if p.is_file() else None
            if old != text:
                out[rel] = text
        return out


def plan_apply(kb: KnowledgeBase, decisions: Sequence[Decision] | None = None) -> Plan:
    """What applying ``decisions`` (default: every pending one) writes, computed against ``kb``
    (loaded from its folder) without writing anything. A message becomes an alternative only when
    it is long enough, not held out as a test example, and not already a question of an entry."""
    root = kb.root
    pending = (
        decisions if decisions is not None else [s.decision for s in states(root).values() if s.status == "pending"]
    )
    interrupted = interrupted_changes(root)
    files = _Files(root)
    owner: dict[str, str] = {}
    for e in kb.entries:
        for q in (e.question, *e.alt_questions):
            owner.setdefault(question_key(q), e.id)
    examples = read_examples(root)
    have_before = list(examples)
    have_examples = {ex.id for ex in examples}
    changes = []
    for d in pending:
        ours = {(a[0], question_key(a[1])) for a in interrupted[d.id].alternatives} if d.id in interrupted else set()
        alts: list[tuple[str, str, str]] = []
        skipped: list[tuple[str, str]] = []
        new_examples: list[Example] = []
        ids: list[str] = []
        draft = None
        entry = kb.entry(d.entry) if d.entry else None
        if d.action in NEEDS_ENTRY and entry is None:
            skipped += [(m, f"entry {d.entry!r} is no longer in the KB") for m in d.messages]
        for m in d.messages if d.action in LABELLED else ():
            if entry is None and d.action in NEEDS_ENTRY:
                break
            split = split_of(m)
            ex = Example(
                example_id(d.id, m),
                m,
                "handoff" if d.action == "out_of_scope" else "answer",
                (entry.id,) if entry is not None else (),
                entry.category if entry is not None else "",
                split,
                d.id,
            )
            ids.append(ex.id)  # an interrupted run may have written it already: still this decision's
            if ex.id not in have_examples:
                new_examples.append(ex)
                have_examples.add(ex.id)
            if entry is None or d.action != "attach":
                continue
            key = question_key(m)
            why = ""
            if split == "test":
                why = "held out as a test example"
            elif len(m) < MIN_ALT:
                why = f"shorter than {MIN_ALT} characters"
            elif owner.get(key) == entry.id and (entry.id, key) not in ours:
                why = "already a question of this entry"
            elif key in owner and owner[key] != entry.id:
                why = f"already a question of {owner[key]!r}"
            if why:
                skipped.append((m, why))
                continue
            owner[key] = entry.id
            alts.append((entry.id, m, _add_alternative(files, kb, entry.id, m)))
        if d.action == "new_entry":
            draft = f"{DRAFTS}/draft-{d.id.lower()}.yaml"
            files.put(draft, _draft_text(d))
        examples += new_examples
        changes.append(Change(d.id, tuple(alts), tuple(dict.fromkeys(ids)), draft, tuple(skipped)))
    if len(examples) != len(have_before):
        files.put(LEARNED, _examples_text(examples))
    return Plan(files.changed(), tuple(changes))


def write_plan(root: Path, plan: Plan) -> None:
    """Write a plan's files, each atomically. Idempotent: the contents are whole files, so a run
    interrupted between two files is completed by writing them again."""
    for rel, text in sorted(plan.files.items()):
        atomic_write(root / rel, text)


def _add_alternative(files: _Files, kb: KnowledgeBase, entry_id: str, text: str) -> str:
    """Add ``text`` to the entry's YAML file when it is kefu's format and the list is a block
    list; otherwise (tables, flow lists) to the sidecar. Returns the file it went to."""
    src = kb.sources.get(entry_id)
    if src is not None and Path(src.path).suffix.lower() in (".yaml", ".yml"):
        old = files.get(src.path)
        new = yaml_add_alternative(old, entry_id, text) if old is not None else None
        if new is not None:
            files.put(src.path, new)
            return src.path
    data = _sidecar(files.get(SIDECAR))
    data.setdefault(entry_id, []).append(text)
    files.put(SIDECAR, _sidecar_text(data))
    return SIDECAR


def _sidecar(text: str | None) -> dict[str, list[str]]:
    if not text:
        return {}
    data = yaml.safe_load(text) or {}
    alts = data.get("alternatives") or {}
    return {str(k): [str(t) for t in v] for k, v in alts.items()}


def _sidecar_text(data: dict[str, list[str]]) -> str | None:
    data = {k: v for k, v in data.items() if v}
    if not data:
        return None
    head = (
        "# Alternative questions learned from shoppers' messages (kefu learn), by entry id.\n"
        "# kefu adds them to the entries of this KB; the FAQ table itself is never rewritten.\n"
    )
    return head + yaml.safe_dump({"alternatives": data}, allow_unicode=True, sort_keys=True, width=10_000)


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


def _draft_text(d: Decision) -> str:
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


# --- undo ----------------------------------------------------------------------------------------
def undo(kb: KnowledgeBase, decision_id: str, who: str | None = None) -> DecisionState:
    """Revert one decision: a pending one is withdrawn; an applied one has its alternatives,
    examples and draft removed from the KB files (the next ``kefu learn`` rebuilds)."""
    root = kb.root
    with kb_lock(root):
        s = states(root).get(decision_id)
        if s is None:
            raise NotFoundError(f"no decision {decision_id!r} in {root / JOURNAL}; see `kefu learn status`")
        if s.status == "undone":
            raise ConfigError(f"decision {decision_id} was already undone")
        if s.change is not None:
            write_plan(root, _revert_plan(kb, s.change))
        append_journal(root, {"event": "undone", "decision": decision_id, "who": who or whoami(), "at": now_iso()})
        return DecisionState(s.decision, "undone", s.change)


def _revert_plan(kb: KnowledgeBase, change: Change) -> Plan:
    files = _Files(kb.root)
    for entry_id, text, rel in change.alternatives:
        if rel == SIDECAR:
            data = _sidecar(files.get(SIDECAR))
            if text in data.get(entry_id, []):
                data[entry_id].remove(text)
            files.put(SIDECAR, _sidecar_text(data))
            continue
        old = files.get(rel)
        new = yaml_remove_alternative(old, entry_id, text) if old is not None else None
        if new is not None:
            files.put(rel, new)
    drop = set(change.examples)
    if drop:
        files.put(LEARNED, _examples_text([e for e in read_examples(kb.root) if e.id not in drop]))
    if change.draft:
        files.put(change.draft, None)
    return Plan(files.changed(), ())
