"""The learning loop's journal: decision records, their status, atomic file writes and the KB lock."""

from __future__ import annotations

import contextlib
import dataclasses
import getpass
import json
import os
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from kb.errors import ConfigError, KBError
from kb.locks import exclusive
from kb.sidecar import JOURNAL

Action = Literal["attach", "out_of_scope", "new_entry", "dismiss", "confirm"]
ACTIONS: tuple[Action, ...] = ("attach", "out_of_scope", "new_entry", "dismiss", "confirm")
LABELLED: tuple[Action, ...] = ("attach", "out_of_scope", "confirm")  # actions that write examples
NEEDS_ENTRY: tuple[Action, ...] = ("attach", "confirm")
Status = Literal["pending", "applied", "undone"]
LOCK = ".learn.lock"
LOCK_WAIT_S = 10.0  # a resolution waits this long for a running `kefu learn`, then says so


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
class DecisionState:
    """A decision and where it stands, from the journal."""

    decision: Decision
    status: Status
    change: Change | None  # applied: what was written


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


def last_run(root: Path) -> dict[str, Any] | None:
    """The journal's last ``kefu learn`` outcome (a ``refused`` or ``learned`` record), if any."""
    runs = [r for r in read_journal(root) if r.get("event") in ("refused", "learned")]
    return runs[-1] if runs else None


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
