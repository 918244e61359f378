"""kefu gaps: which messages count as unserved, the leader clustering (against a brute-force oracle),
and the report (batching, caching, masking, stable ids, nearest entries)."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from indexer.encoder import FakeEncoder
from indexer.index import Index
from kb.errors import NotFoundError
from service import gaps as gaps_mod
from service.gaps import FALLBACK_THRESHOLD, GapFinder, find, leader_clusters, merge_threshold
from service.gaps_unserved import GapMessage, read_unserved, select_unserved
from service.tickets import AnswerLog, FeedbackStore, LoggedAnswer
from tests.service.conftest import PHONE

NOW = 1_800_000_000.0


def row(
    aid: str,
    t: float,
    decision: str,
    reason: str | None = None,
    query: str = "发票怎么开",
    session: str | None = "S1",
    shop: str | None = None,
) -> LoggedAnswer:
    return LoggedAnswer(aid, t, session, query, decision, reason, None, 0.3, 5.0, None, shop)


def insert(db: Path, rows: list[LoggedAnswer], votes: dict[str, str] | None = None) -> None:
    """Write answer-log rows (and votes) with chosen times, as the service would have over days."""
    AnswerLog(db), FeedbackStore(db)  # the schema
    with sqlite3.connect(db) as c:
        for r in rows:
            values = (r.answer_id, r.created, r.session_id, r.query, r.decision, r.reason, r.top_id, r.confidence)
            c.execute(
                "INSERT INTO answers (answer_id, created, session_id, query, decision, reason, top_id, confidence, "
                "elapsed_ms, ticket_id, shop) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (*values, 5, None, r.shop),
            )
        for aid, vote in (votes or {}).items():
            c.execute("INSERT INTO feedback VALUES (?, ?, ?, ?, ?, ?)", (aid, NOW, NOW, "S1", vote, None))


# --- which messages count -----------------------------------------------------------------------------------------
def test_low_confidence_handoffs_count_and_rule_handoffs_do_not():
    rows = [
        row("A1", NOW - 100, "handoff", "low_confidence", "这个能用花呗吗"),
        row("A2", NOW - 100, "handoff", "needs_order", "我的快递三天没动了"),
        row("A3", NOW - 100, "handoff", "user_requested", "转人工"),
        row("A4", NOW - 100, "handoff", "sensitive", "我要投诉你们"),
        row("A5", NOW - 100, "handoff", "empty_query", "？"),
        row("A6", NOW - 100, "answer", None, "退款多久到账"),
    ]
    got = select_unserved(rows, {}, NOW)
    assert [(m.answer_id, m.kind) for m in got] == [("A1", "low_confidence")]


def test_a_clarify_counts_only_when_abandoned():
    t = NOW - 3600
    rows = [
        # answered 2 minutes later in the same session: served
        row("C1", t, "clarify", "ambiguous", session="S1"),
        row("A1", t + 120, "answer", session="S1"),
        # answered, but 11 minutes later: abandoned
        row("C2", t, "clarify", "ambiguous", session="S2"),
        row("A2", t + 660, "answer", session="S2"),
        # only another session answered: abandoned
        row("C3", t, "clarify", "ambiguous", session="S3"),
        row("A3", t + 60, "answer", session="S4"),
        # followed by another clarify and a handoff, never an answer: abandoned
        row("C4", t, "clarify", "ambiguous", session="S5"),
        row("C5", t + 30, "clarify", "ambiguous", session="S5", query="还是不明白"),
        row("H5", t + 60, "handoff", "user_requested", session="S5"),
        # an answer before the clarify does not serve it
        row("A6", t - 60, "answer", session="S6"),
        row("C6", t, "clarify", "ambiguous", session="S6"),
        # a greeting is a rule, not a gap
        row("C7", t, "clarify", "greeting", query="你好", session="S7"),
        # too recent to judge (5 minutes old)
        row("C8", NOW - 300, "clarify", "ambiguous", session="S8"),
    ]
    got = {m.answer_id: m.kind for m in select_unserved(rows, {}, NOW)}
    assert got == {
        "C2": "abandoned_clarify",
        "C3": "abandoned_clarify",
        "C4": "abandoned_clarify",
        "C5": "abandoned_clarify",
        "C6": "abandoned_clarify",
    }
    # the window is a parameter: with 15 minutes, C2's answer after 11 minutes served it
    assert "C2" not in {m.answer_id for m in select_unserved(rows, {}, NOW, abandon_s=900)}


def test_voted_down_answers_count_but_not_a_rule_handoff_voted_down():
    rows = [
        row("A1", NOW - 100, "answer", query="运费险怎么赔"),
        row("A2", NOW - 100, "answer", query="退款多久到账"),
        row("A3", NOW - 100, "handoff", "needs_order", "帮我查订单"),
        row("A4", NOW - 100, "handoff", "low_confidence", "能开专票吗"),
    ]
    votes = {"A1": "down", "A2": "up", "A3": "down", "A4": "down"}
    got = {m.answer_id: m.kind for m in select_unserved(rows, votes, NOW)}
    assert got == {"A1": "voted_down", "A4": "voted_down"}


def test_selected_messages_are_masked_even_if_the_log_was_not():
    rows = [row("A1", NOW - 100, "handoff", "low_confidence", f"手机{PHONE}收不到验证码")]
    (m,) = select_unserved(rows, {}, NOW)
    assert PHONE not in m.text and "[手机号]" in m.text


def test_read_unserved_reads_the_stores(tmp_path: Path):
    db = tmp_path / "tickets.db"
    t = NOW - 7200
    insert(
        db,
        [
            row("H1", t, "handoff", "low_confidence", "能开专票吗", session="S1"),
            row("C1", t, "clarify", "ambiguous", "退款", session="S2"),
            row("A1", t + 60, "answer", query="退款多久到账", session="S2"),
            row("C2", t, "clarify", "ambiguous", "运费", session="S3"),
            row("A2", t, "answer", query="运费险怎么赔", session="S4"),
            row("N1", t, "handoff", "needs_order", "我的快递到哪了", session="S5"),
            row("OLD", NOW - 30 * 86400, "handoff", "low_confidence", "很久以前的问题", session="S6"),
        ],
        votes={"A2": "down", "A1": "up"},
    )
    got = read_unserved(AnswerLog(db), FeedbackStore(db), NOW - 86400, NOW)
    assert {m.answer_id: m.kind for m in got} == {
        "H1": "low_confidence",
        "C2": "abandoned_clarify",
        "A2": "voted_down",
    }


# --- clustering: the oracle -----------------------------------------------------------------------------------------
def oracle(vecs: list[list[float]], grams: list[frozenset[str]], t: float) -> list[int]:
    """Leader clustering written out by hand: each item joins the most similar earlier leader (ties
    to the earliest) among those at similarity ≥ t sharing a bigram, else leads its own cluster."""
    leaders: list[int] = []
    out = []
    for i, v in enumerate(vecs):
        best, best_sim = -1, None
        for leader in leaders:
            sim = sum(a * b for a, b in zip(v, vecs[leader], strict=True))
            if sim >= t and grams[i] & grams[leader] and (best_sim is None or sim > best_sim):
                best, best_sim = leader, sim
        if best < 0:
            leaders.append(i)
            best = i
        out.append(best)
    return out


# Quarter steps in three dimensions: every dot product is exact in float32, so the oracle's sums and
# numpy's agree to the bit and a threshold comparison cannot flip on rounding.
VECS = st.lists(st.lists(st.integers(-2, 2).map(lambda k: k / 4), min_size=3, max_size=3), max_size=12)


GRAMS = st.frozensets(st.sampled_from(["发票", "票怎", "退款", "款多", "运费"]), max_size=3)


@settings(max_examples=300, deadline=None)
@given(vecs=VECS, data=st.data(), t=st.sampled_from([-0.25, 0.0, 0.125, 0.25, 0.5]))
def test_leader_clusters_match_the_oracle(vecs, data, t):
    grams = data.draw(st.lists(GRAMS, min_size=len(vecs), max_size=len(vecs)))
    got = leader_clusters(np.array(vecs, dtype=np.float32).reshape(len(vecs), 3), grams, t)
    assert got == oracle(vecs, grams, t)


def test_messages_with_nothing_in_common_are_never_merged():
    v = np.tile(np.array([[1.0, 0.0, 0.0]], dtype=np.float32), (3, 1))  # the encoder calls them identical
    grams = [frozenset({"发票"}), frozenset({"退款"}), frozenset({"发票", "开票"})]
    assert leader_clusters(v, grams, 0.9) == [0, 1, 0]


def test_a_member_joins_the_most_similar_leader():
    v = np.array([[1, 0], [0, 1], [0.6, 0.8], [0.8, 0.6]], dtype=np.float32)
    g = [frozenset({"ab"})] * 4
    # 0 and 1 lead (orthogonal); 2 is closer to 1, 3 closer to 0
    assert leader_clusters(v, g, 0.5) == [0, 1, 1, 0]


def test_merge_threshold_is_the_quantile_of_different_entries_questions(
    tiny_index: Index, monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.setattr(gaps_mod, "MIN_PAIRS", 40)  # the tiny KB has 48 such pairs
    rows = [i for i, c in enumerate(tiny_index.chunks) if c.kind in ("question", "alt")]
    v = tiny_index.vectors[rows]
    units = [tiny_index.chunks[i].unit_id for i in rows]
    sims = [float(v[i] @ v[j]) for i in range(len(rows)) for j in range(i + 1, len(rows)) if units[i] != units[j]]
    assert len(sims) >= gaps_mod.MIN_PAIRS
    assert merge_threshold(tiny_index) == pytest.approx(float(np.quantile(sims, gaps_mod.PAIR_QUANTILE)), abs=1e-6)


def test_merge_threshold_falls_back_when_the_kb_is_too_small(tiny_index: Index, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(gaps_mod, "MIN_PAIRS", 10**6)
    assert merge_threshold(tiny_index) == FALLBACK_THRESHOLD


# --- the report -----------------------------------------------------------------------------------------------------
def msg(aid: str, t: float, text: str, kind: str = "low_confidence", session: str = "S1") -> GapMessage:
    return GapMessage(aid, t, session, text, kind, None, 0.2)  # type: ignore[arg-type]


INVOICE = ["发票怎么开", "发票怎么开？", "怎么开发票", "发票怎么开具", "发票怎么开呢"]


OTHER = ["花呗分期手续费多少", "能用花呗分期吗"]


def test_report_clusters_largest_first_with_examples_and_nearest_entries(tiny_index: Index):
    finder = GapFinder(FakeEncoder(dim=128))
    messages = [msg(f"A{i}", NOW - 1000 + i, text, session=f"S{i}") for i, text in enumerate(INVOICE * 2 + OTHER)]
    r = finder.report(tiny_index, messages, threshold=0.5, until=NOW)
    assert r.messages == 12 and r.decided == 0
    assert [g.size for g in r.gaps] == sorted((g.size for g in r.gaps), reverse=True)
    top = r.gaps[0]
    assert set(top.messages) <= set(INVOICE) and top.size >= 6
    assert len(top.examples) == 3 and len(set(top.examples)) == 3
    assert top.first_seen == NOW - 1000 and top.sessions == top.size
    assert sum(g.size for g in r.gaps) == 12
    assert not any(set(g.messages) & set(INVOICE) and set(g.messages) & set(OTHER) for g in r.gaps)
    for g in r.gaps:
        assert 1 <= len(g.nearest) <= 3
        assert all(n.id in tiny_index.entries or n.id in tiny_index.doc_units for n in g.nearest)
        assert [n.score for n in g.nearest] == sorted((n.score for n in g.nearest), reverse=True)


def test_report_encodes_in_batches_and_caches_vectors(tiny_index: Index):
    enc = FakeEncoder(dim=128)
    finder = GapFinder(enc)
    messages = [msg(f"A{i}", NOW - 1000 + i, f"{t}{i}") for i, t in enumerate(INVOICE * 30)]  # 150 distinct texts
    finder.report(tiny_index, messages, threshold=0.5)
    assert enc.calls == 3  # 64 + 64 + 22, not 150 calls
    finder.report(tiny_index, messages, threshold=0.5)
    assert enc.calls == 3  # all cached


def test_report_ids_are_stable_as_traffic_grows_and_decided_messages_leave(tiny_index: Index):
    finder = GapFinder(FakeEncoder(dim=128))
    first = [msg(f"A{i}", NOW - 1000 + i, t) for i, t in enumerate(INVOICE[:3] + OTHER)]
    r1 = finder.report(tiny_index, first, threshold=0.5)
    later = [*first, msg("B1", NOW, INVOICE[3]), msg("B2", NOW, "完全无关的新问题")]
    r2 = finder.report(tiny_index, later, threshold=0.5)
    ids1 = {g.id: g.size for g in r1.gaps}
    ids2 = {g.id: g.size for g in r2.gaps}
    assert set(ids1) <= set(ids2)
    inv = next(g for g in r1.gaps if INVOICE[0] in g.messages)
    assert ids2[inv.id] == ids1[inv.id] + 1  # the new message joined without renaming the cluster
    r3 = finder.report(tiny_index, later, threshold=0.5, decided={"发票怎么开", "怎么开发票", "发票怎么开具"})
    assert inv.id not in {g.id for g in r3.gaps} and r3.decided == 4


def test_report_masks_examples(tiny_index: Index):
    finder = GapFinder(FakeEncoder(dim=128))
    r = finder.report(tiny_index, [msg("A1", NOW, f"我手机{PHONE}的订单发票怎么开")], threshold=0.5)
    blob = repr(r.to_json()) + repr(r.gaps[0].messages)
    assert PHONE not in blob and "[手机号]" in blob


def test_find_names_a_missing_gap(tiny_index: Index):
    r = GapFinder(FakeEncoder(dim=128)).report(tiny_index, [], threshold=0.5)
    with pytest.raises(NotFoundError, match="no open gap"):
        find(r, "Gdeadbeef00")


def test_a_clause_is_a_nearest_unit_with_its_label(tiny_kb_dir, tiny_settings, fake_encoder):
    from indexer.build import build_and_swap
    from indexer.store import IndexStore
    from kb.loader import load_kb

    asked = "签收第八天还能无理由退货吗"
    (tiny_kb_dir / "alternatives.yaml").write_text(f"alternatives:\n  rules-return.2: [{asked}]\n", "utf-8")
    store = IndexStore(tiny_settings.index_home, tiny_settings.keep_builds)
    build_and_swap(load_kb(tiny_kb_dir, strict=False), fake_encoder, store, tiny_settings.chunk_chars)
    index = store.load_current(fake_encoder.model_id)
    messages = [msg(f"C{i}", NOW - 100 + i, asked, session=f"S{i}") for i in range(3)]
    (g,) = GapFinder(fake_encoder).report(index, messages, threshold=0.5, until=NOW).gaps
    assert g.nearest[0].id == "rules-return.2" and g.nearest[0].question == "《退货规范》第二条"
