"""Real shoppers' messages: kefu on labelled turns of JDDC customer-service sessions.

The labels (``eval/data/traffic_labels.jsonl``) hold judgements only, keyed by session and turn:
scope (``in``: a help-center article answers it; ``order``: it needs the shopper's own order;
``out``), the expected decision and, for ``in``, the entries that answer it. The messages stay in
``../shared/traffic/jddc_sessions.tsv`` and are read from there; without that file the traffic
table is skipped with a note.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from eval.dataset import DATA_DIR
from kb.errors import KBError
from service.answerer import Answerer
from service.schemas import MAX_HISTORY_TURNS, MAX_TURN_CHARS, HistoryTurn

LABELS = DATA_DIR / "traffic_labels.jsonl"
SESSIONS = Path(__file__).resolve().parents[2] / "shared" / "traffic" / "jddc_sessions.tsv"
TRAFFIC_FILE = "traffic.json"  # written by `kefu eval traffic --split test` next to the eval report


@dataclass(frozen=True)
class TrafficLabel:
    session: str
    turn: int
    split: str
    scope: str  # in | order | out
    expect: str
    reason: str | None
    relevant: tuple[str, ...]
    elliptical: bool


@dataclass(frozen=True)
class TrafficOutcome:
    label: TrafficLabel
    decision: str
    reason: str | None
    answered: str | None  # the answer's entry id when decision == "answer"
    options: tuple[str, ...]  # clarify options


@dataclass(frozen=True)
class TrafficTable:
    """What the eval report shows for one run (one split, history on or off)."""

    messages: int
    answer_rate: float
    answered_precision: float  # answers that are a right entry of an in-scope message / all answers
    in_scope: int
    right_answer_or_option: float  # in-scope: the right entry answered or among the clarify options
    needless_handoff: float  # in-scope messages handed off
    order_answered: float  # order-specific messages given a bare answer
    out_answered: float  # out-of-scope messages (not greetings) given an answer
    clarify_rate: float
    clarify_has_right: float  # in-scope clarifies whose options hold a right entry
    elliptical_right: float  # elliptical in-scope messages: right entry answered or offered
    greeting_right: float  # greetings, thanks and closings given the greeting (or closing) reply, no handoff

    def to_json(self) -> dict[str, Any]:
        return {k: round(v, 4) if isinstance(v, float) else v for k, v in vars(self).items()}


def load_labels(path: Path = LABELS) -> list[TrafficLabel]:
    out = []
    for n, line in enumerate(path.read_text("utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            r = json.loads(line)
            out.append(
                TrafficLabel(
                    str(r["session"]),
                    int(r["turn"]),
                    str(r["split"]),
                    str(r["scope"]),
                    str(r["expect"]),
                    r.get("reason"),
                    tuple(r.get("relevant", ())),
                    bool(r.get("elliptical", False)),
                )
            )
        except (ValueError, KeyError, TypeError) as exc:
            raise KBError(f"{path}:{n}: invalid traffic label ({exc})") from exc
    return out


def load_sessions(path: Path = SESSIONS) -> dict[str, list[tuple[int, str, str]]]:
    """session → [(turn, speaker, text)] in turn order."""
    if not path.is_file():
        raise KBError(f"no traffic sessions at {path}: the real-traffic table needs ../shared/traffic beside the repo")
    sessions: dict[str, list[tuple[int, str, str]]] = {}
    with path.open(encoding="utf-8", newline="") as f:
        for row in csv.DictReader(f, delimiter="\t"):
            sessions.setdefault(row["session"], []).append((int(row["turn"]), row["speaker"], row["text"]))
    for turns in sessions.values():
        turns.sort()
    return sessions


def run_traffic(
    answerer: Answerer,
    labels: list[TrafficLabel],
    sessions: dict[str, list[tuple[int, str, str]]],
    history: bool,
    progress: Callable[[int, int], None] | None = None,
) -> list[TrafficOutcome]:
    """Ask every labelled customer turn. With ``history``, the conversation before it (customer
    and agent turns, the most recent MAX_HISTORY_TURNS) goes along as the API's ``history``, as a
    platform that holds the chat would send it."""
    by_session: dict[str, list[TrafficLabel]] = {}
    for lab in labels:
        by_session.setdefault(lab.session, []).append(lab)
    out: list[TrafficOutcome] = []
    done = 0
    for sid, labs in by_session.items():
        ordered = sessions.get(sid, [])
        turns = {t: (speaker, text) for t, speaker, text in ordered}
        for lab in sorted(labs, key=lambda x: x.turn):
            speaker, text = turns.get(lab.turn, ("", ""))
            if speaker != "customer":
                raise KBError(f"traffic label {sid}:{lab.turn} is not a customer turn in the sessions file")
            before = [
                HistoryTurn(role="customer" if who == "customer" else "agent", text=said[:MAX_TURN_CHARS])
                for t, who, said in ordered
                if t < lab.turn and said.strip()
            ][-MAX_HISTORY_TURNS:]
            a = answerer.answer(text[: answerer.options.max_query_chars], history=before if history else None)
            out.append(
                TrafficOutcome(
                    lab,
                    a.decision,
                    a.reason,
                    a.answers[0].id if a.decision == "answer" and a.answers else None,
                    tuple(i.id for i in a.answers) if a.decision == "clarify" else (),
                )
            )
            done += 1
            if progress:
                progress(done, len(labels))
    return out


def _share(num: int, den: int) -> float:
    return num / den if den else 0.0


def summarize(outcomes: list[TrafficOutcome]) -> TrafficTable:
    ins = [o for o in outcomes if o.label.scope == "in"]
    answered = [o for o in outcomes if o.decision == "answer"]
    right = [o for o in answered if o.label.scope == "in" and o.answered in o.label.relevant]

    def hit(o: TrafficOutcome) -> bool:
        return o.answered in o.label.relevant or bool(set(o.options) & set(o.label.relevant))

    clarified_in = [o for o in ins if o.decision == "clarify"]
    orders = [o for o in outcomes if o.label.scope == "order"]
    outs = [o for o in outcomes if o.label.scope == "out" and o.label.reason != "greeting"]
    ellip = [o for o in ins if o.label.elliptical]
    greetings = [o for o in outcomes if o.label.reason == "greeting"]
    return TrafficTable(
        messages=len(outcomes),
        answer_rate=_share(len(answered), len(outcomes)),
        answered_precision=_share(len(right), len(answered)),
        in_scope=len(ins),
        right_answer_or_option=_share(sum(hit(o) for o in ins), len(ins)),
        needless_handoff=_share(sum(o.decision == "handoff" for o in ins), len(ins)),
        order_answered=_share(sum(o.decision == "answer" for o in orders), len(orders)),
        out_answered=_share(sum(o.decision == "answer" for o in outs), len(outs)),
        clarify_rate=_share(sum(o.decision == "clarify" and o.reason != "greeting" for o in outcomes), len(outcomes)),
        clarify_has_right=_share(sum(hit(o) for o in clarified_in), len(clarified_in)),
        elliptical_right=_share(sum(hit(o) for o in ellip), len(ellip)),
        greeting_right=_share(sum(o.reason == "greeting" for o in greetings), len(greetings)),
    )


TRAFFIC_COLUMNS = (
    ("messages", "messages"),
    ("in_scope", "answerable"),
    ("answer_rate", "answer rate"),
    ("answered_precision", "answered precision"),
    ("right_answer_or_option", "answerable: right entry answered or offered"),
    ("needless_handoff", "answerable handed off"),
    ("order_answered", "order-specific answered"),
    ("out_answered", "out of scope answered"),
    ("clarify_rate", "clarify rate"),
    ("clarify_has_right", "clarify options hold a right entry"),
    ("elliptical_right", "elliptical answerable: right entry"),
    ("greeting_right", "greetings and closings: a polite reply"),
)


def traffic_markdown(tables: dict[str, dict[str, Any]]) -> list[str]:
    """Rows ``run name → TrafficTable.to_json()`` as a markdown table."""
    if not tables:
        return []
    lines = ["| run | " + " | ".join(h for _, h in TRAFFIC_COLUMNS) + " |", "|" + "---|" * (len(TRAFFIC_COLUMNS) + 1)]
    for name, t in tables.items():
        # a column a table written by an older kefu lacks is shown as "–"
        cells = [f"{t[k]:.3f}" if isinstance(t.get(k), float) else str(t.get(k, "–")) for k, _ in TRAFFIC_COLUMNS]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return lines
