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
