"""``kefu stats``: what kefu did with its traffic, per day, and the calibration it serves with.

Every figure comes from the answer log and the votes in the tickets database (service/tickets.py):

- the decision rates are shares of all answers served that day (``answer`` + ``clarify`` +
  ``handoff`` + ``greeting`` = 1: a greeting, thanks or the end of a chat gets a reply of its own,
  not a clarification), and each handoff reason's rate is its share of all answers too, so the
  reasons add up to the handoff rate;
- a vote counts on the day of the answer it is about (each answer's current vote, once);
  ``up_rate``/``down_rate`` are shares of the votes cast (they add up to 1), ``vote_rate`` the
  share of answers that got a vote;
- days are local calendar days; a day without traffic is listed with zeros (and rates of ``None``),
  so plots keep their time axis;
- a report for one shop counts the answers asked in that shop (the answer log's ``shop``) and the
  votes on them, shows the calibration of the build the shop serves, and no gaps (they are
  clustered against the platform's KB).

``/metrics`` exports the same numbers over the last day as gauges (``StatsCollector``), computed
when Prometheus scrapes, from the shared database: every worker reports the same values.
"""

from __future__ import annotations

import datetime as dt
import logging
import re
import sqlite3
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from indexer.build import calibration_origin, describe_calibration
from indexer.folder import Manifest, read_manifest
from kb.errors import ConfigError, IndexStateError
from service.gaps import GapReport, iso
from service.gaps_unserved import KINDS, read_unserved
from service.schemas import HANDOFF_REASONS
from service.tickets import AnswerLog, FeedbackStore

if TYPE_CHECKING:
    from service.shops import Shops

log = logging.getLogger("kefu.stats")

DECISIONS = ("answer", "clarify", "handoff", "greeting")  # greeting: a greeting or closing reply
UNITS_S = {"m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
MAX_DAYS = 400  # per-day rows in one report (the most recent)
METRICS_WINDOW_S = 86400.0  # /metrics: the last day
TOP_GAPS = 5
MAX_SINCE_S = 3660 * 86400.0  # ten years


def parse_since(text: str, now: float | None = None, name: str = "--since") -> float:
    """``7d``, ``24h``, ``30m``, ``2w`` back from ``now``, or a local date ``2026-12-01`` → unix time;
    at most ``MAX_SINCE_S`` back (dates and day counts beyond it are typos, and overflow the calendar).
    ``name``: what the caller calls the value (a CLI flag, an API parameter), for the error."""
    now = time.time() if now is None else now
    t = text.strip().lower()
    m = re.fullmatch(r"(\d{1,9}(?:\.\d{1,6})?)\s*([mhdw])", t)
    try:
        since = (
            now - float(m.group(1)) * UNITS_S[m.group(2)] if m else time.mktime(dt.date.fromisoformat(t).timetuple())
        )
    except (ValueError, OverflowError):
        raise ConfigError(f"{name} {text!r} is neither a duration (30m, 24h, 7d, 2w) nor a date (2026-12-01)") from None
    if not now - MAX_SINCE_S <= since <= now:
        raise ConfigError(f"{name} {text!r} is outside the last {MAX_SINCE_S // 86400:.0f} days")
    return since


def _rate(n: int, of: int) -> float | None:
    return round(n / of, 4) if of else None


@dataclass(frozen=True)
class Counts:
    """Decisions and votes of a span of traffic."""

    answers: int = 0  # everything served, whatever the decision
    answer: int = 0
    clarify: int = 0  # 您是不是想问: greetings and closings are counted apart
    handoff: int = 0
    greeting: int = 0  # a greeting, thanks or the end of a chat, given its reply
    handoff_reasons: dict[str, int] = field(default_factory=dict)
    up: int = 0
    down: int = 0

    @property
    def votes(self) -> int:
        return self.up + self.down

    def rates(self) -> dict[str, float | None]:
        return {
            "answer": _rate(self.answer, self.answers),
            "clarify": _rate(self.clarify, self.answers),
            "handoff": _rate(self.handoff, self.answers),
            "greeting": _rate(self.greeting, self.answers),
            "vote": _rate(self.votes, self.answers),
            "up": _rate(self.up, self.votes),
            "down": _rate(self.down, self.votes),
        }

    def handoff_rates(self) -> dict[str, float | None]:
        return {r: _rate(n, self.answers) for r, n in sorted(self.handoff_reasons.items())}

    def to_json(self) -> dict[str, Any]:
        return {
            "answers": self.answers,
            "answer": self.answer,
            "clarify": self.clarify,
            "handoff": self.handoff,
            "greeting": self.greeting,
            "handoff_reasons": dict(sorted(self.handoff_reasons.items())),
            "up": self.up,
            "down": self.down,
            "rates": self.rates(),
            "handoff_rates": self.handoff_rates(),
        }


@dataclass(frozen=True)
class DayStats:
    day: str  # local YYYY-MM-DD
    counts: Counts


@dataclass(frozen=True)
class CalibrationInfo:
    """Where the served build's thresholds come from and the precision they promise."""

    build_id: str
    built_at: str
    origin: str  # default, self, labelled or shipped (indexer.build.calibration_origin)
    line: str  # describe_calibration's sentence
    precision: float | None  # answered precision
    coverage: float | None
    basis: str | None  # "predicted": the self-calibration's estimate from the KB; "dev": measured on labelled dev
    fitted_for_this_kb: bool

    @classmethod
    def of(cls, m: Manifest) -> CalibrationInfo:
        cal = m.calibration or {}
        predicted, metrics = cal.get("predicted") or {}, cal.get("metrics") or {}
        figures, basis = (predicted, "predicted") if predicted else (metrics, "dev") if metrics else ({}, None)
        p, c = figures.get("answered_precision"), figures.get("coverage")
        return cls(
            build_id=m.build_id,
            built_at=m.built_at,
            origin=calibration_origin(cal),
            line=describe_calibration(cal),
            precision=float(p) if isinstance(p, int | float) else None,
            coverage=float(c) if isinstance(c, int | float) else None,
            basis=basis,
            fitted_for_this_kb=bool(cal) and cal.get("kb_hash", m.kb_hash) == m.kb_hash,
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "build": self.build_id,
            "built_at": self.built_at,
            "origin": self.origin,
            "line": self.line,
            "answered_precision": self.precision,
            "coverage": self.coverage,
            "basis": self.basis,
            "fitted_for_this_kb": self.fitted_for_this_kb,
        }


@dataclass(frozen=True)
class StatsReport:
    since: float | None
    until: float
    total: Counts
    days: tuple[DayStats, ...]
    unserved: dict[str, int]  # unserved messages by kind (service/gaps.py), before clustering
    calibration: CalibrationInfo | None
    gaps: GapReport | None  # the largest clusters (None: not computed)
    shop: str | None = None  # the figures of this shop's traffic only (None: all traffic)

    def to_json(self) -> dict[str, Any]:
        return {
            "shop": self.shop,
            "since": iso(self.since) if self.since is not None else None,
            "until": iso(self.until),
            "total": self.total.to_json(),
            "days": [{"day": d.day, **d.counts.to_json()} for d in self.days],
            "unserved": self.unserved,
            "calibration": self.calibration.to_json() if self.calibration else None,
            "top_gaps": [g.to_json() for g in self.gaps.gaps] if self.gaps else None,
        }


def local_days(since: float, until: float) -> list[str]:
    """Every local calendar day from the one of ``since`` to the one of ``until`` (excluded end), the
    most recent ``MAX_DAYS``."""
    first = dt.date.fromtimestamp(since)
    last = dt.date.fromtimestamp(max(since, until - 1e-6))
    n = min((last - first).days + 1, MAX_DAYS)
    return [(last - dt.timedelta(days=n - 1 - i)).isoformat() for i in range(n)]


def _counts(decisions: list[tuple[str, str | None, int]], votes: list[tuple[str, int]]) -> Counts:
    by: Counter[str] = Counter()
    reasons: Counter[str] = Counter()
    for decision, reason, n in decisions:
        by["greeting" if decision == "clarify" and reason == "greeting" else decision] += n
        if decision == "handoff":
            reasons[reason or "unknown"] += n
    v = Counter({vote: 0 for vote in ("up", "down")})
    for vote, n in votes:
        v[vote] += n
    return Counts(
        answers=sum(by.values()),
        answer=by["answer"],
        clarify=by["clarify"],
        handoff=by["handoff"],
        greeting=by["greeting"],
        handoff_reasons=dict(reasons),
        up=v["up"],
        down=v["down"],
    )


def traffic(
    log_: AnswerLog, feedback: FeedbackStore, since: float | None, until: float, shop: str | None = None
) -> tuple[Counts, list[DayStats]]:
    """The whole span's counts and one ``DayStats`` per local day (zeros for days without traffic);
    ``shop``: of that shop's answers only."""
    rows = log_.daily(since, until, shop)
    vote_rows = feedback.daily(since, until, shop)
    per_day: dict[str, tuple[list[tuple[str, str | None, int]], list[tuple[str, int]]]] = {}
    for day, decision, reason, n in rows:
        per_day.setdefault(day, ([], []))[0].append((decision, reason, n))
    for day, vote, n in vote_rows:
        per_day.setdefault(day, ([], []))[1].append((vote, n))
    start = (
        since
        if since is not None
        else min((time.mktime(dt.date.fromisoformat(d).timetuple()) for d in per_day), default=until)
    )
    days = [DayStats(d, _counts(*per_day.get(d, ([], [])))) for d in local_days(start, until)]
    total = _counts([(d, r, n) for _, d, r, n in rows], [(v, n) for _, v, n in vote_rows])
    return total, days


def stats_report(
    log_: AnswerLog,
    feedback: FeedbackStore,
    manifest: Manifest | None,
    since: float | None,
    until: float,
    gaps: GapReport | None = None,
    shop: str | None = None,
) -> StatsReport:
    """The report of [since, until); ``shop``: of that shop's answers (``manifest`` is then the
    shop's build, ``shop_manifest``)."""
    total, days = traffic(log_, feedback, since, until, shop)
    unserved = Counter(m.kind for m in read_unserved(log_, feedback, since, until, shop=shop))
    return StatsReport(
        since,
        until,
        total,
        tuple(days),
        {k: unserved[k] for k in KINDS},
        CalibrationInfo.of(manifest) if manifest is not None else None,
        gaps,
        shop,
    )


def shop_manifest(shops: Shops, shop: str) -> Manifest | None:
    """The manifest of the build ``shop`` serves, whose calibration its stats show; None for a shop
    not registered now (removed since its traffic was logged) or a build that cannot be read."""
    rec = shops.registry.get(shop)
    if rec is None:
        return None
    try:
        return read_manifest(shops.folder(rec))
    except IndexStateError as exc:  # the figures stand without it
        log.warning("shop %s: no calibration in its stats: %s", shop, exc)
        return None


# --- Prometheus -------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class StatsSource:
    """What the collector reads at a scrape (None from the getter: not started yet)."""

    log: AnswerLog
    feedback: FeedbackStore
    manifest: Manifest | None


class StatsCollector(Collector):
    """The stats of the last day as gauges, read from the database when Prometheus scrapes."""

    WINDOW = "1d"

    def __init__(self, source: Callable[[], StatsSource | None], window_s: float = METRICS_WINDOW_S) -> None:
        self.source = source
        self.window_s = window_s

    def _families(self) -> dict[str, GaugeMetricFamily]:
        w = ["window"]
        return {
            "answers": GaugeMetricFamily(
                "kefu_window_answers",
                "answers served in the window, by decision and reason",
                labels=[*w, "decision", "reason"],
            ),
            "rate": GaugeMetricFamily(
                "kefu_window_decision_rate", "share of the window's answers by decision", labels=[*w, "decision"]
            ),
            "handoff": GaugeMetricFamily(
                "kefu_window_handoff_rate", "share of the window's answers handed off, by reason", labels=[*w, "reason"]
            ),
            "votes": GaugeMetricFamily(
                "kefu_window_votes", "current votes on the window's answers", labels=[*w, "vote"]
            ),
            "vote_share": GaugeMetricFamily(
                "kefu_window_vote_share", "share of the window's votes (up + down = 1)", labels=[*w, "vote"]
            ),
            "unserved": GaugeMetricFamily(
                "kefu_window_unserved_messages", "messages kefu did not serve (kefu gaps), by kind", labels=[*w, "kind"]
            ),
            "precision": GaugeMetricFamily(
                "kefu_calibration_answered_precision",
                "answered precision the served calibration promises (basis: predicted from the KB, or dev)",
                labels=["build", "origin", "basis"],
            ),
            "coverage": GaugeMetricFamily(
                "kefu_calibration_coverage",
                "coverage the served calibration promises",
                labels=["build", "origin", "basis"],
            ),
        }

    def describe(self) -> Iterator[GaugeMetricFamily]:
        yield from self._families().values()

    def collect(self) -> Iterator[GaugeMetricFamily]:
        fam = self._families()
        src = self.source()
        if src is not None:
            try:
                self._fill(fam, src, time.time())
            except sqlite3.Error as exc:  # a scrape never fails on the database; the gauges are left out
                log.warning("stats gauges not computed: %s", exc)
                return
        yield from fam.values()

    def _fill(self, fam: dict[str, GaugeMetricFamily], src: StatsSource, now: float) -> None:
        w = self.WINDOW
        since = now - self.window_s
        for _, decision, reason, n in _merge_days(src.log.daily(since, now)):
            fam["answers"].add_metric([w, decision, reason or "none"], n)
        total, _ = traffic(src.log, src.feedback, since, now)
        for decision in DECISIONS:
            fam["rate"].add_metric([w, decision], total.rates()[decision] or 0.0)
        for reason in sorted({*HANDOFF_REASONS, *total.handoff_reasons}):
            fam["handoff"].add_metric([w, reason], (total.handoff_rates().get(reason) or 0.0))
        for vote in ("up", "down"):
            fam["votes"].add_metric([w, vote], getattr(total, vote))
            fam["vote_share"].add_metric([w, vote], total.rates()[vote] or 0.0)
        unserved = Counter(m.kind for m in read_unserved(src.log, src.feedback, since, now))
        for kind in KINDS:
            fam["unserved"].add_metric([w, kind], unserved[kind])
        if src.manifest is not None:
            cal = CalibrationInfo.of(src.manifest)
            labels = [cal.build_id, cal.origin, cal.basis or "none"]
            if cal.precision is not None:
                fam["precision"].add_metric(labels, cal.precision)
            if cal.coverage is not None:
                fam["coverage"].add_metric(labels, cal.coverage)


def _merge_days(rows: list[tuple[str, str, str | None, int]]) -> list[tuple[str, str, str | None, int]]:
    """The per-day rows of a window summed over its days."""
    c: Counter[tuple[str, str | None]] = Counter()
    for _, decision, reason, n in rows:
        c[(decision, reason)] += n
    return [("", d, r, n) for (d, r), n in sorted(c.items(), key=lambda x: (x[0][0], x[0][1] or ""))]
