"""Fused hits and the ranker's candidate pool on a wider KB, checked feature by feature against
brute-force oracles; bigram Jaccard and reused lexical evidence."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from indexer.encoder import FakeEncoder
from indexer.index import Index
from indexer.lexical import char_bigrams, jaccard
from indexer.normalize import normalize
from indexer.pool import POOL_FEATURES, POOL_VOTE_VECTORS
from indexer.store import IndexStore
from indexer.units import ANSWER_WEIGHT
from tests.indexer.conftest import _add_entry, _build, _q
from tests.indexer.oracle import unit_rule


@pytest.fixture(scope="module")
def wide_index(tmp_path_factory):
    """The tiny KB plus 30 extra entries: more vectors than the 64 that votes count."""
    from kb.settings import Settings
    from tests.conftest import TINY_FAQ

    root = tmp_path_factory.mktemp("wide")
    kb_dir = root / "kb"
    (kb_dir / "faq").mkdir(parents=True)
    (kb_dir / "faq" / "tiny.yaml").write_text(TINY_FAQ, "utf-8")
    for n in range(30):
        _add_entry(kb_dir, n)
    encoder = FakeEncoder(dim=128)
    settings = Settings(kb_dir=kb_dir, data_dir=root / "data", model="fake:hash-128")
    store = IndexStore(settings.index_home, settings.keep_builds)
    _build(kb_dir, encoder, store)
    index = store.load_current(encoder.model_id)
    assert index.vectors.shape[0] > 64
    return index, encoder


@pytest.mark.parametrize("mode", ["lexical", "rrf", "weighted"])
@pytest.mark.parametrize("k", [1, 3, 10_000])
@pytest.mark.parametrize("text", ["退货运费谁出", "第3号额外问题怎么办"])
def test_fused_hits_carry_each_units_own_evidence(wide_index, mode, k, text):
    """Brute-force oracle: every fused hit's score, question score, best row and votes are what
    the per-unit rule gives for that unit, whatever the fused order."""
    index, encoder = wide_index
    q = _q(encoder, text)
    cos = index.vectors @ q
    units = index.search_units_fused(q, text, k, mode)
    assert len(units) == min(k, len(index.units))
    k_vec = min(len(cos), max(64, k * 12))
    kth = float(np.sort(cos)[::-1][k_vec - 1])  # votes count the vectors at least this close
    for r, u in enumerate(units):
        rows = index.units[u.unit_id]
        score, q_side, best = unit_rule(index, rows, cos[rows], ANSWER_WEIGHT)
        assert u.rank == r
        assert u.score == pytest.approx(score, abs=1e-6) and u.question_score == pytest.approx(q_side, abs=1e-6)
        assert u.best_chunk == best
        # the fake encoder makes exact ties; rounding may put a tied vector on either side
        assert int((cos[rows] > kth + 1e-6).sum()) <= u.votes <= int((cos[rows] >= kth - 1e-6).sum())
    if k >= len(index.units):
        assert sum(u.votes for u in units) >= k_vec


def _pool_oracle(index: Index, q: np.ndarray, text: str, exclude: int | None) -> dict[str, dict[str, Any]]:
    """POOL_FEATURES of every unit by brute force over its own rows (``exclude`` left out),
    with ranks as (count strictly better, count at least as good - 1): the fake encoder ties."""
    cos = index.vectors @ q
    bm = index.lexical.scores(text)
    rows_of = {u: [r for r in rows if r != exclude] for u, rows in index.units.items()}
    rows_of = {u: rows for u, rows in rows_of.items() if rows}
    dense = {u: unit_rule(index, rows, cos[rows], ANSWER_WEIGHT)[0] for u, rows in rows_of.items()}
    lex = {u: float(bm[rows].max()) for u, rows in rows_of.items()}
    lex_max = max(max(lex.values()), 1e-9)
    grams = char_bigrams(text)
    n = max(1, len(grams))
    is_q = index._is_question
    out = {}
    for u, rows in rows_of.items():
        q_rows = [r for r in rows if is_q[r]]
        a_rows = [r for r in rows if not is_q[r]]
        cover = {r: len(grams & index.norm_bigrams[r]) / n for r in rows}
        out[u] = {
            "dense": dense[u],
            "question": float(cos[q_rows].max()) if q_rows else float(cos[rows].max()),
            "answer": float(cos[a_rows].max()) if a_rows else dense[u],
            "lexical": lex[u] / lex_max,
            "lexical_question": float(bm[q_rows].max()) / lex_max if q_rows else 0.0,
            "dense_rank": (
                sum(d > dense[u] + 1e-6 for d in dense.values()),
                sum(d >= dense[u] - 1e-6 for d in dense.values()) - 1,
            ),
            "lexical_rank": (
                sum(v > lex[u] + 1e-9 for v in lex.values()),
                sum(v >= lex[u] - 1e-9 for v in lex.values()) - 1,
            ),
            "cover_question": max((cover[r] for r in q_rows), default=0.0),
            "cover_answer": max((cover[r] for r in a_rows), default=0.0),
            "cover_unit": len(grams & frozenset().union(*(index.norm_bigrams[r] for r in rows))) / n,
        }
    return out


def _check_pool(index: Index, q: np.ndarray, text: str, size: int, exclude: int | None = None) -> None:
    pool = index.candidate_pool(q, text, size, exclude_row=exclude)
    oracle = _pool_oracle(index, q, text, exclude)
    assert pool.x.shape == (min(size, len(index.units)), len(POOL_FEATURES))
    assert [u.rank for u in pool.units] == list(range(len(pool.units)))
    cos = index.vectors @ q
    if exclude is not None:
        cos[exclude] = -np.inf
    kth = float(np.sort(cos)[::-1][min(len(cos), POOL_VOTE_VECTORS) - 1])
    for u, row in zip(pool.units, pool.x, strict=True):
        want = oracle[u.unit_id]
        got = dict(zip(POOL_FEATURES, row.tolist(), strict=True))
        for name in (
            "dense",
            "question",
            "answer",
            "lexical",
            "lexical_question",
            "cover_question",
            "cover_answer",
            "cover_unit",
        ):
            assert got[name] == pytest.approx(want[name], abs=1e-5), (u.unit_id, name)
        for name in ("dense_rank", "lexical_rank"):
            lo, hi = want[name]
            assert np.log1p(lo) - 1e-9 <= got[name] <= np.log1p(hi) + 1e-9, (u.unit_id, name)
        rows = [r for r in index.units[u.unit_id] if r != exclude]
        assert int((cos[rows] > kth + 1e-6).sum()) <= u.votes <= int((cos[rows] >= kth - 1e-6).sum())
        assert got["votes"] == pytest.approx(np.log1p(u.votes))
        assert u.best_chunk != exclude


@pytest.mark.parametrize("size", [1, 5, 10_000])
@pytest.mark.parametrize("text", ["退货运费谁出", "第3号额外问题怎么办", "完全无关的内容"])
def test_candidate_pool_features_match_a_brute_force_oracle(wide_index, size, text):
    index, encoder = wide_index
    text = normalize(text)
    q = _q(encoder, text)
    _check_pool(index, q, text, size)
    # the pool is the fused search's rrf order
    fused = index.search_units_fused(q, text, min(size, 10), "rrf")
    assert [u.unit_id for u in index.candidate_pool(q, text, size).units[: len(fused)]] == [u.unit_id for u in fused]


@pytest.mark.parametrize("which", [0, 7, -1])
def test_candidate_pool_leaves_the_excluded_row_out_of_every_channel(wide_index, which):
    """A stored alternative searched for itself, as ranker training does: its own vector, BM25
    and bigrams must not count, or it would find itself."""
    index, _ = wide_index
    alts = [r for r, c in enumerate(index.chunks) if c.kind == "alt"]
    row = alts[which]
    _check_pool(index, index.vectors[row], index.norm_texts[row], 10_000, exclude=row)


def test_candidate_pool_refuses_an_empty_pool(tiny_index):
    with pytest.raises(ValueError, match="pool size must be ≥ 1, got 0"):
        tiny_index.candidate_pool(tiny_index.vectors[0], "退货", 0)


@pytest.mark.parametrize("text", ["退货运费谁出", "第3号额外问题怎么办", "完全无关的内容", "", "a"])
def test_bigram_jaccard_matches_the_set_formula_for_every_row(wide_index, text):
    index, _ = wide_index
    text = normalize(text)
    grams = char_bigrams(text)
    got = index.bigram_jaccard(text)
    want = [jaccard(grams, index.norm_bigrams[r]) for r in range(len(index.chunks))]
    assert got.tolist() == want  # the same ratio of the same integers: equal, not just close


@pytest.mark.parametrize("exclude", [None, 7])
def test_candidate_pool_reuses_lexical_evidence_and_refuses_evidence_for_another_query(wide_index, exclude):
    index, encoder = wide_index
    text = normalize("退货运费谁出")
    q = _q(encoder, text)
    evidence = index.lexical_evidence(text, exclude)
    want = index.bigram_jaccard(text)
    if exclude is not None:
        want[exclude] = 0.0
    assert evidence.jaccard.tolist() == want.tolist()
    given = index.candidate_pool(q, text, 10, exclude_row=exclude, lexical=evidence)
    own = index.candidate_pool(q, text, 10, exclude_row=exclude)
    assert [u.unit_id for u in given.units] == [u.unit_id for u in own.units]
    np.testing.assert_array_equal(given.x, own.x)
    with pytest.raises(ValueError, match="lexical evidence is for query"):
        index.candidate_pool(q, normalize("发票怎么开"), 10, exclude_row=exclude, lexical=evidence)
    with pytest.raises(ValueError, match="exclude_row"):
        index.candidate_pool(q, text, 10, exclude_row=3, lexical=evidence)


def test_candidate_pool_marks_the_clauses_an_faq_entry_in_it_cites(tiny_kb_dir, tiny_settings, fake_encoder):
    from indexer.build import build_and_swap
    from indexer.store import IndexStore
    from kb.loader import load_kb
    from tests.service.test_documents import CITING_FAQ  # refund-deadline cites rules-return 第二条 and 第三条

    (tiny_kb_dir / "faq" / "citing.yaml").write_text(CITING_FAQ, "utf-8")
    store = IndexStore(tiny_settings.index_home, tiny_settings.keep_builds)
    build_and_swap(load_kb(tiny_kb_dir, strict=False), fake_encoder, store, tiny_settings.chunk_chars)
    index = store.load_current(fake_encoder.model_id)
    q = _q(fake_encoder, "七天从哪天开始算")
    pool = index.candidate_pool(q, "七天从哪天开始算", len(index.units))
    assert pool.cited is not None and len(pool.cited) == len(pool.units) == len(index.units)
    assert pool.document is not None
    assert pool.document.tolist() == [float(u.unit_id not in index.entries) for u in pool.units]
    marked = {u.unit_id for u, c in zip(pool.units, pool.cited, strict=True) if c == 1.0}
    assert marked == {"rules-return.2", "rules-return.3"} and set(pool.cited.tolist()) == {0.0, 1.0}
    # the citing entry not among the candidates: its clauses compete as any document unit does
    alone = index.candidate_pool(q, "七天从哪天开始算", len(index.units), exclude_unit="refund-deadline")
    assert alone.cited is not None and not alone.cited.any()
