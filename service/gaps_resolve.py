"""Recording an operator's decision on a gap or a handoff ticket, refused when another operator decided first."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from indexer.folder import Manifest
from kb.errors import ConfigError, KBError
from kb.learn_journal import LOCK, Action, Decision, states, whoami
from kb.learned import MAX_MESSAGES, decide, item_key, ticket_messages
from kb.loadstate import question_key
from kb.schema import KnowledgeBase
from kb.settings import Settings
from kb.sidecar import JOURNAL

RESOLVE_ACTIONS: tuple[Action, ...] = ("attach", "out_of_scope", "new_entry", "dismiss")


class AlreadyResolvedError(ConfigError):
    """Another operator decided this item first (HTTP 409)."""

    http_status = 409


def served_kb(settings: Settings, manifest: Manifest) -> KnowledgeBase:
    """The KB the served build was built from (KEFU_KB_DIR when it is that folder or a file in it)."""
    from kb.loader import load_kb

    root = Path(manifest.kb_root)
    if not root.is_dir():
        raise KBError(
            f"build {manifest.build_id} was built from {root}, which is not on this machine; "
            "resolve where the KB lives, or rebuild from a KB here"
        )
    configured = Path(settings.kb_dir).expanduser()
    folder = configured if configured.is_dir() else configured.parent
    path = configured if folder.resolve() == root.resolve() else root
    return load_kb(path, log_changes=False)


def check_writable(root: Path) -> None:
    """Refuse before deciding anything when this process cannot write the KB's learning files."""
    for p in (root, root / JOURNAL, root / LOCK):
        if p.exists() and not os.access(p, os.W_OK):
            raise ConfigError(
                f"the knowledge base {root} is not writable by this process (user {whoami()}): {p} is read-only. "
                "Resolve from an account that can write it, or serve a writable copy (KEFU_KB_DIR, then kefu build)"
            )


def resolve(
    kb: KnowledgeBase,
    action: Action,
    messages: Sequence[str],
    *,
    entry: str | None = None,
    ticket: str | None = None,
    category: str | None = None,
    who: str | None = None,
) -> Decision:
    """Record an operator's decision through ``kb.learned.decide``. A second decision on the same
    item (another operator was first), or on messages that are all in live decisions already (a
    ticket whose message was resolved with its gap), is an ``AlreadyResolvedError``."""
    if action not in RESOLVE_ACTIONS:
        raise ConfigError(f"action {action!r} is unknown; allowed: {', '.join(RESOLVE_ACTIONS)}")
    check_writable(kb.root)
    texts = list(messages)[:MAX_MESSAGES]
    live = [s.decision for s in states(kb.root).values() if s.status != "undone"]
    done = {question_key(m): d for d in live for m in d.messages}
    if texts and all(question_key(t) in done for t in texts) and item_key(texts, ticket) not in {d.item for d in live}:
        d = done[question_key(texts[0])]
        raise AlreadyResolvedError(
            f"{'ticket ' + ticket if ticket else 'these messages'} already decided: {d.action} by {d.who} at {d.at} "
            f"(decision {d.id}); `kefu learn undo {d.id}` first to decide again"
        )
    try:
        return decide(kb, action, texts, entry=entry, ticket=ticket, category=category, who=who)
    except ConfigError as exc:
        key = item_key([t.strip() for t in texts if t.strip()], ticket)
        if any(s.decision.item == key and s.status != "undone" for s in states(kb.root).values()):
            raise AlreadyResolvedError(str(exc)) from exc
        raise


def resolve_ticket(
    kb: KnowledgeBase,
    tickets_db: Path,
    ticket_id: str,
    action: Action,
    *,
    entry: str | None = None,
    category: str | None = None,
    who: str | None = None,
) -> Decision:
    """A decision on a handoff ticket's (masked) message; a shop's ticket is refused, its answers
    belong to the shop's KB."""
    from service.shops_tickets import ShopTickets

    if tickets_db.is_file():
        route = ShopTickets.at(tickets_db).routes([ticket_id]).get(ticket_id)
        if route is not None:
            raise ConfigError(f"ticket {ticket_id} was asked in shop {route[0]!r}: its answers belong to the shop's KB")
    return resolve(
        kb, action, ticket_messages(tickets_db, ticket_id), entry=entry, ticket=ticket_id, category=category, who=who
    )
