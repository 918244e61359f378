"""The int8 dense pass against the float32 product it stands in for."""

from __future__ import annotations

import numpy as np
import pytest

from indexer.dense import Int8Scorer, int8_scorer
from kb.errors import IndexStateError


def _unit_rows(n: int, d: int, seed: int = 0) -> np.ndarray:
    x = np.random.default_rng(seed).normal(size=(n, d)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


@pytest.mark.parametrize(("n", "d"), [(1, 8), (7, 16), (2000, 384)])
def test_cosines_stay_within_a_few_thousandths_of_float32(n: int, d: int):
    rows = _unit_rows(n, d)
    scorer = Int8Scorer(rows)
    for q in _unit_rows(20, d, seed=1):
        got = scorer.cosines(q)
        assert got.shape == (n,) and got.dtype == np.float32
        assert np.abs(got - rows @ q).max() < 0.01  # measured on the bundled KB: ≤ 0.0025


def test_ranks_of_well_separated_rows_are_kept():
    rows = _unit_rows(500, 384)
    q = rows[42] + 0.05 * _unit_rows(1, 384, seed=3)[0]
    q /= np.linalg.norm(q)
    assert int(np.argmax(Int8Scorer(rows).cosines(q))) == 42


def test_a_zero_row_scores_zero_and_bad_shapes_are_refused():
    rows = _unit_rows(3, 16)
    rows[1] = 0.0
    assert Int8Scorer(rows).cosines(rows[0])[1] == 0.0
    for bad in (np.zeros((0, 16), np.float32), np.zeros(16, np.float32)):
        with pytest.raises(IndexStateError, match="cannot quantise"):
            Int8Scorer(bad)


def test_int8_scorer_is_none_without_onnxruntime(monkeypatch):
    import builtins

    real_import = builtins.__import__

    def no_ort(name, *a, **kw):
        if name == "onnxruntime":
            raise ImportError(name)
        return real_import(name, *a, **kw)

    monkeypatch.setattr(builtins, "__import__", no_ort)
    assert int8_scorer(_unit_rows(3, 8)) is None


def test_index_switches_its_dense_pass(tiny_index):
    q = tiny_index.vectors[0]
    exact = tiny_index._cosines(q)
    assert not tiny_index.dense_int8
    assert tiny_index.set_dense_int8(True) and tiny_index.dense_int8
    approx = tiny_index._cosines(q)
    assert approx[-1] == -np.inf and np.abs(approx[:-1] - exact[:-1]).max() < 0.01
    pool = tiny_index.candidate_pool(q, tiny_index.norm_texts[0], 3)
    assert pool.units[0].unit_id == tiny_index.chunks[0].unit_id
    assert not tiny_index.set_dense_int8(False)
    np.testing.assert_array_equal(tiny_index._cosines(q), exact)


def test_the_runtime_applies_the_setting(tiny_settings, tiny_index, fake_encoder):
    from service.runtime import Runtime

    on = Runtime.create(tiny_settings, encoder=fake_encoder).answerer(index=tiny_index)
    assert on.index.dense_int8  # the default
    off = Runtime.create(tiny_settings.with_overrides(dense_int8=False), encoder=fake_encoder).answerer(
        index=tiny_index
    )
    assert not off.index.dense_int8


# --- one dense scorer interface (indexer.dense.DenseScorer) -----------------------------------
def _copy(index, vindex):
    from indexer.index import Index

    return Index(index.manifest, index.vectors, vindex, index.chunks, index.anchors, index.anchor_labels, index.entries)


def test_every_scorer_is_a_dense_scorer_and_the_exact_ones_agree():
    from indexer.dense import DenseScorer, FaissScorer, Float32Scorer
    from indexer.vectors import VectorIndex

    rows = _unit_rows(300, 32)
    q = _unit_rows(1, 32, seed=1)[0]
    full = Float32Scorer(rows)
    flat = FaissScorer(VectorIndex.build(rows, "flat"), k=300)
    for scorer in (full, flat, Int8Scorer(rows)):
        assert isinstance(scorer, DenseScorer) and scorer.rows == 300 and scorer.exact
    np.testing.assert_allclose(full.cosines(q), rows @ q, atol=1e-6)
    np.testing.assert_allclose(flat.cosines(q), rows @ q, atol=1e-5)
    out = np.empty(300, dtype=np.float32)
    assert full.cosines(q, out=out) is out


@pytest.mark.parametrize("kind", ["flat", "hnsw"])
def test_a_faiss_scorer_scores_what_it_finds_and_leaves_the_rest_at_minus_infinity(kind):
    from indexer.dense import FaissScorer
    from indexer.vectors import VectorIndex

    rows = _unit_rows(500, 32)
    q = _unit_rows(1, 32, seed=2)[0]
    scorer = FaissScorer(VectorIndex.build(rows, kind), k=20)
    assert not scorer.exact
    cos = scorer.cosines(q)
    found = np.flatnonzero(np.isfinite(cos))
    assert len(found) == 20
    np.testing.assert_allclose(cos[found], rows[found] @ q, atol=1e-5)
    if kind == "flat":
        assert set(found) == set(np.argsort(-(rows @ q))[:20])


def test_the_served_dense_pass_follows_the_index_kind(tiny_index, fake_encoder):
    """flat: a full scan (int8 or float32); hnsw: the FAISS search, whatever dense_int8 says,
    and every retrieval mode reads it."""
    from indexer.dense import FaissScorer, Float32Scorer
    from indexer.normalize import normalize
    from indexer.vectors import VectorIndex

    flat = _copy(tiny_index, tiny_index.vindex)
    assert isinstance(flat.scorer, Float32Scorer)
    hnsw = _copy(tiny_index, VectorIndex.build(tiny_index.vectors, "hnsw"))
    assert not hnsw.set_dense_int8(True)
    assert isinstance(hnsw.scorer, FaissScorer)
    text = normalize("退货运费谁出")
    q = fake_encoder.encode_queries([text])[0]
    for mode in ("dense", "lexical", "rrf", "weighted"):
        assert hnsw.search_units_fused(q, text, 3, mode)[0].unit_id == "refund-shipping-fee"
    # the tiny KB has fewer rows than ANN_ROWS: the HNSW pass reaches every row, as the scan does
    np.testing.assert_allclose(hnsw._cosines(q)[:-1], flat._cosines(q)[:-1], atol=1e-5)


def test_units_an_approximate_pass_did_not_reach_score_as_its_farthest_row(tiny_index, fake_encoder):
    from indexer.dense import FaissScorer
    from indexer.normalize import normalize
    from indexer.vectors import VectorIndex

    index = _copy(tiny_index, VectorIndex.build(tiny_index.vectors, "hnsw"))
    index.set_scorer(FaissScorer(index.vindex, k=5))
    text = normalize("退货运费谁出")
    q = fake_encoder.encode_queries([text])[0]
    cos = index._cosines(q)
    assert int(np.isfinite(cos).sum()) == 5
    pool = index.candidate_pool(q, text, len(index.units))
    assert np.isfinite(pool.x).all()
    floor = float(cos[np.isfinite(cos)].min())
    assert min(u.score for u in pool.units) == pytest.approx(floor, abs=1e-6)
    assert pool.units[0].unit_id == "refund-shipping-fee"
    assert sum(u.votes for u in pool.units) == 5  # only reached rows vote
    with pytest.raises(IndexStateError, match="covers 3 rows"):
        index.set_scorer(FaissScorer(VectorIndex.build(tiny_index.vectors[:3], "flat")))


def test_dense_retrieval_is_the_dense_mode_of_the_fused_search(tiny_index, fake_encoder):
    from indexer.normalize import normalize

    text = normalize("七天无理由退货")
    q = fake_encoder.encode_queries([text])[0]
    assert tiny_index.search_units_fused(q, text, 5, "dense") == tiny_index.search_units(q, 5)
