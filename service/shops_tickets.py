"""Which shop a handoff ticket belongs to and whom it goes to (``route``).

A table of its own in the tickets database (``ticket_routes``), written with the ticket: the
ticket store stays as it is, and a ticket without a row is a platform ticket (every handoff
without a shop goes to 官方客服).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kb.errors import ConfigError
from service.tickets import TICKET_COLUMNS, Prior, Ticket, TicketStore
from service.tickets_db import Database

_SCHEMA = """
CREATE TABLE IF NOT EXISTS ticket_routes (
    ticket_id TEXT PRIMARY KEY,
    shop TEXT NOT NULL,
    route TEXT NOT NULL CHECK (route IN ('shop', 'platform')),
    created REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS ticket_routes_shop ON ticket_routes (shop, created);
"""
PLATFORM = "platform"


@dataclass(frozen=True)
class RoutedTicket:
    """A ticket with its shop (None: the platform's own) and route."""

    ticket: Ticket
    shop: str | None
    route: str

    def to_json(self) -> dict[str, Any]:
        return {**self.ticket.to_json(), "shop": self.shop, "route": self.route}


class ShopTickets(Database):
    """Tickets with shop and route: ``create`` writes both, ``list`` reads them back."""

    def __init__(self, tickets: TicketStore) -> None:
        super().__init__(tickets.path)
        self.tickets = tickets
        self._conn().executescript(_SCHEMA)

    @classmethod
    def at(cls, path: Path) -> ShopTickets:
        return cls(TicketStore(path))

    def create(
        self,
        query: str,
        reason: str,
        session_id: str | None,
        candidates: list[dict[str, Any]],
        shop: str,
        route: str,
        prior: Prior = Prior(),
    ) -> Ticket:
        """A ticket of ``shop`` for ``route``, with the chat before it."""
        t = self.tickets.create(query, reason, session_id, candidates, prior)
        self._conn().execute(
            "INSERT INTO ticket_routes (ticket_id, shop, route, created) VALUES (?, ?, ?, ?)",
            (t.id, shop, route, t.created),
        )
        return t

    def routes(self, ticket_ids: list[str]) -> dict[str, tuple[str, str]]:
        """ticket id → (shop, route) for the tickets that have one."""
        out: dict[str, tuple[str, str]] = {}
        for i in range(0, len(ticket_ids), 500):
            batch = ticket_ids[i : i + 500]
            q = f"SELECT ticket_id, shop, route FROM ticket_routes WHERE ticket_id IN ({','.join('?' * len(batch))})"
            for tid, shop, route in self._conn().execute(q, batch):
                out[str(tid)] = (str(shop), str(route))
        return out

    def list(self, limit: int = 50, reason: str | None = None, shop: str | None = None) -> list[RoutedTicket]:
        """Recent tickets, newest first, with shop and route; ``shop`` keeps that shop's only."""
        if limit < 1:
            raise ConfigError(f"limit={limit} must be ≥ 1")
        if shop is None:
            tickets = self.tickets.list(limit, reason)
        else:
            q = (
                f"SELECT {', '.join('t.' + c for c in TICKET_COLUMNS)} FROM tickets t "
                "JOIN ticket_routes r ON r.ticket_id = t.id WHERE r.shop = ?"
            )
            args: list[Any] = [shop]
            if reason:
                q += " AND t.reason = ?"
                args.append(reason)
            q += " ORDER BY t.created DESC LIMIT ?"
            rows = self._conn().execute(q, (*args, limit)).fetchall()
            tickets = [Ticket.of_row(r) for r in rows]
        routes = self.routes([t.id for t in tickets])
        return [RoutedTicket(t, *routes.get(t.id, (None, PLATFORM))) for t in tickets]
