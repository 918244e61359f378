"""The response (identical for HTTP and `kefu ask --json`) and request models."""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from indexer.vectorstore import SHOP_ID
from kb.settings import MAX_TOP_K

Decision = Literal["answer", "clarify", "handoff"]
Reason = Literal[
    "user_requested", "sensitive", "merchant", "needs_order", "low_confidence", "empty_query", "ambiguous", "greeting"
]
# Handoffs a rule decides before any confidence (the route stage), and with low confidence every handoff
# reason: one list for the stats, the shops' merge and the learning loop.
RULE_HANDOFF_REASONS = ("user_requested", "sensitive", "merchant", "needs_order", "empty_query")
HANDOFF_REASONS = ("low_confidence", *RULE_HANDOFF_REASONS)
Vote = Literal["up", "down"]
ANSWER_ID_PATTERN = r"^A[0-9a-f]{16}$"
MAX_COMMENT_CHARS = 500


def new_answer_id() -> str:
    return "A" + uuid.uuid4().hex[:16]


class SourceRef(BaseModel):
    model_config = ConfigDict(frozen=True)

    doc_id: str
    section: str
    kind: Literal["faq", "rules", "doc"]
    owner: Literal["platform", "shop"] = Field(
        "platform", description="whose KB the answer is from: the platform help center or the asked shop's"
    )
    clause: int | None = Field(None, description="clause number (第五条 → 5) when the answer is a rules clause")


class Cite(BaseModel):
    """A rules clause an FAQ answer rests on."""

    model_config = ConfigDict(frozen=True)

    id: str = Field(description="the clause's id for GET /v1/entries/{id}, e.g. rules-seven-day-return.5")
    doc_id: str
    title: str = Field(description="the rules document's title")
    clause: int
    label: str = Field(description="e.g. 《七天无理由退货规范》第五条")


class AnswerItem(BaseModel):
    model_config = ConfigDict(frozen=True)

    id: str
    title: str
    text: str
    score: float = Field(description="cosine similarity of the best-matching vector of this answer")
    source: SourceRef
    cites: list[Cite] = Field(default_factory=list, description="the rules clauses an FAQ answer rests on")


class HandoffInfo(BaseModel):
    model_config = ConfigDict(frozen=True)

    ticket_id: str
    message: str
    route: Literal["shop", "platform"] = Field(
        "platform", description="who takes it: the shop's agents, or 官方客服 (every handoff without a shop)"
    )


class Answer(BaseModel):
    """One decision for one query, with ranked answers (best first)."""

    model_config = ConfigDict(frozen=True)

    query: str
    normalized_query: str
    decision: Decision
    reason: Reason | None = None
    answers: list[AnswerItem] = Field(default_factory=list)
    handoff: HandoffInfo | None = None
    suggestions: list[AnswerItem] = Field(
        default_factory=list,
        description="on a low-confidence or needs_order handoff: the best candidates, not the answer (not "
        "confident enough, or the shopper's own order is needed); shown to the agent in the ticket and to the "
        "shopper as 'while you wait' links; none for a message plainly about something else",
    )
    message: str | None = Field(None, description="what to say besides the answers (clarify prompt, greeting)")
    session_id: str
    elapsed_ms: float
    trace: dict[str, Any] = Field(default_factory=dict, description="signals and thresholds behind the decision")
    # A default factory: every Answer gets its own id wherever it is built (the answerer, the CLI).
    answer_id: str = Field(default_factory=new_answer_id, description="this answer's id, for POST /v1/feedback (👍/👎)")


MAX_HISTORY_TURNS = 10  # recent turns a caller may send; older ones do not help a follow-up
MAX_TURN_CHARS = 300  # per turn: 10 × 300 characters stay well inside KEFU_MAX_BODY_BYTES


class HistoryTurn(BaseModel):
    """One earlier turn of the conversation, as the platform holds it."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    role: Literal["customer", "agent"] = Field(description="who said it: the shopper or a human/bot agent")
    text: str = Field(min_length=1, max_length=MAX_TURN_CHARS)


class AnswerRequest(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {"query": "买的衣服不合适，七天内能退吗？", "top_k": 3},
                {"query": "那运费谁出", "session_id": "S1a2b3c4d5e6f7a8b"},
                {
                    "query": "那几点能到?",
                    "history": [
                        {"role": "customer", "text": "我买的冰箱什么时候送货上门"},
                        {"role": "agent", "text": "大件商品一般在发货后3到5天送达，送货前会电话联系您"},
                    ],
                },
                {"query": "转人工"},
            ]
        },
    )

    query: str = Field(description="the shopper's message (Simplified or Traditional Chinese, English)")
    top_k: int | None = Field(
        None, ge=1, le=MAX_TOP_K, description=f"answers to return, 1–{MAX_TOP_K} (default KEFU_TOP_K)"
    )
    session_id: str | None = Field(None, max_length=64, pattern=r"^[A-Za-z0-9_-]+$")
    shop: str | None = Field(
        None,
        max_length=64,
        pattern=SHOP_ID.pattern,
        description="the shop whose KB is searched together with the platform help center (`kefu shops list`)",
    )
    history: list[HistoryTurn] | None = Field(
        None,
        max_length=MAX_HISTORY_TURNS,
        description="the conversation so far, oldest first (customer and agent turns): a follow-up such as "
        "「那几点能到?」 is read with the previous customer turn and the agent's reply; replaces kefu's own "
        "session memory for this request",
    )


class FeedbackRequest(BaseModel):
    """A shopper's 👍/👎 on one answer; voting again on the same answer replaces the vote."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "answer_id": "A0123456789abcdef",
                    "session_id": "S1a2b3c4d5e6f7a8b",
                    "vote": "down",
                    "comment": "没说清楚",
                }
            ]
        },
    )

    answer_id: str = Field(pattern=ANSWER_ID_PATTERN, description="answer_id of a response from POST /v1/answer")
    session_id: str = Field(
        max_length=64, pattern=r"^[A-Za-z0-9_-]+$", description="session_id of that response (the voter's session)"
    )
    vote: Vote
    comment: str | None = Field(
        None, max_length=MAX_COMMENT_CHARS, description="optional remark (personal data masked)"
    )

    @field_validator("comment")
    @classmethod
    def _comment_is_text(cls, v: str | None) -> str | None:
        return stripped_text(v, "comment")


def stripped_text(v: str | None, name: str | None = None) -> str | None:
    """A free-text field stripped (blank: None), refused when it cannot be stored."""
    if v is None:
        return None
    try:
        v.encode("utf-8")
    except UnicodeEncodeError as exc:  # a lone surrogate from a JSON escape cannot be stored
        raise ValueError(f"{name + ' is ' if name else ''}not valid Unicode text; send UTF-8 text") from exc
    return v.strip() or None


class FeedbackResult(BaseModel):
    model_config = ConfigDict(frozen=True)

    answer_id: str
    vote: Vote
    replaced: Vote | None = Field(description="the earlier vote this one replaced, if any")


class Welcome(BaseModel):
    """What a chat opens with (GET /v1/welcome)."""

    model_config = ConfigDict(frozen=True)

    message: str = Field(description="the greeting, with the example questions in it")
    examples: list[str] = Field(
        description="questions of the KB served to suggest asking (one of each of its largest categories), "
        "or a KB of help articles' section headings"
    )


class ErrorBody(BaseModel):
    error: str
    message: str


def describe_invalid(errors: Sequence[Mapping[str, Any]]) -> str:
    """Validation problems of a request as the API's 422 ``invalid_request`` says them (and
    `kefu ask -` for a JSON line): ``field: message``, up to five."""
    parts = []
    for e in errors[:5]:
        if e.get("type") == "json_invalid":  # its location is a character offset, not a field
            parts.append("body is not valid JSON (send UTF-8 JSON)")
            continue
        loc = ".".join(str(p) for p in e.get("loc", ()) if p != "body") or "body"
        parts.append(f"{loc}: {e.get('msg')}")
    return "; ".join(parts)
