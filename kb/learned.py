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

This module decides, plans, applies and undoes; the journal, its records and the lock are in
``kb/learn_journal.py``, the files it writes (examples, alternatives, drafts) in ``kb/learn_files.py``.
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from kb.errors import ConfigError, NotFoundError
from kb.learn_files import (
    Example,
    draft_text,
    example_id,
    examples_text,
    parse_sidecar,
    read_examples,
    sidecar_text,
    split_of,
    yaml_add_alternative,
    yaml_remove_alternative,
)
from kb.learn_journal import (
    ACTIONS,
    LABELLED,
    NEEDS_ENTRY,
    Action,
    Change,
    Decision,
    DecisionState,
    append_journal,
    atomic_write,
    interrupted_changes,
    kb_lock,
    now_iso,
    states,
    whoami,
)
from kb.loadstate import question_key
from kb.schema import MIN_ALT, KnowledgeBase
from kb.sidecar import DRAFTS, JOURNAL, LEARNED, SIDECAR

MAX_MESSAGES = 200  # one decision; a gap cluster is a few dozen messages at most
EXAMPLES_ONLY = "a labelled example only (kefu learn --examples-only)"


class AlreadyUndoneError(ConfigError):
    """The decision was undone before (HTTP 409: another operator may have been first)."""

    http_status = 409


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
        found = kb.target(entry)
        if found is None:
            raise NotFoundError(
                f"no FAQ entry or document clause/section {entry!r} in {kb.root}; "
                "`kefu ask` shows the ids of candidates"
            )
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


def plan_apply(kb: KnowledgeBase, decisions: Sequence[Decision] | None = None, alternatives: bool = True) -> Plan:
    """What applying ``decisions`` (default: every pending one) writes, computed against ``kb``
    (loaded from its folder) without writing anything. A message becomes an alternative only when
    it is long enough, not held out as a test example, and not already a question of an entry;
    with ``alternatives`` False none does (``kefu learn --examples-only``): attached messages are
    labelled examples alone, which calibrate, check and tune, for a KB whose learned rows pull
    other entries' traffic (eval/learn_rows.py)."""
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
    for doc in kb.documents:
        for unit, questions in doc.questions:
            for q in questions:
                owner.setdefault(question_key(q), unit)
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
        entry = kb.target(d.entry) if d.entry else None
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
            elif not alternatives and (entry.id, key) not in ours:  # an interrupted run's row stays
                why = EXAMPLES_ONLY
            if why:
                skipped.append((m, why))
                continue
            owner[key] = entry.id
            alts.append((entry.id, m, _add_alternative(files, kb, entry.id, m)))
        if d.action == "new_entry":
            draft = f"{DRAFTS}/draft-{d.id.lower()}.yaml"
            files.put(draft, draft_text(d))
        examples += new_examples
        changes.append(Change(d.id, tuple(alts), tuple(dict.fromkeys(ids)), draft, tuple(skipped)))
    if len(examples) != len(have_before):
        files.put(LEARNED, examples_text(examples))
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
    old_sidecar = files.get(SIDECAR)
    data = parse_sidecar(old_sidecar)
    data.setdefault(entry_id, []).append(text)
    files.put(SIDECAR, sidecar_text(data, old_sidecar))
    return SIDECAR


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
            raise AlreadyUndoneError(f"decision {decision_id} was already undone")
        if s.change is not None:
            write_plan(root, _revert_plan(kb, s.change))
        append_journal(root, {"event": "undone", "decision": decision_id, "who": who or whoami(), "at": now_iso()})
        return DecisionState(s.decision, "undone", s.change)


def _revert_plan(kb: KnowledgeBase, change: Change) -> Plan:
    files = _Files(kb.root)
    for entry_id, text, rel in change.alternatives:
        if rel == SIDECAR:
            old_sidecar = files.get(SIDECAR)
            data = parse_sidecar(old_sidecar)
            if text in data.get(entry_id, []):
                data[entry_id].remove(text)
            files.put(SIDECAR, sidecar_text(data, old_sidecar))
            continue
        old = files.get(rel)
        new = yaml_remove_alternative(old, entry_id, text) if old is not None else None
        if new is not None:
            files.put(rel, new)
    drop = set(change.examples)
    if drop:
        files.put(LEARNED, examples_text([e for e in read_examples(kb.root) if e.id not in drop]))
    if change.draft:
        files.put(change.draft, None)
    return Plan(files.changed(), ())
