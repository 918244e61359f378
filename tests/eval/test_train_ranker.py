"""The KB-agnostic ranker's training sources (python -m eval.train_ranker)."""

from __future__ import annotations

import numpy as np
import pytest

from eval.train_ranker import SOURCE_WEIGHT, weighted
from service.ranker import Group


def _g(weight: float) -> Group:
    return Group(np.zeros((2, 11)), np.array([True, False]), weight)


def test_a_source_weighs_the_same_and_its_unit_queries_keep_their_relative_weight():
    queries = [_g(1.0) for _ in range(6)]
    units = [_g(5.0) for _ in range(2)]  # a document unit's pseudo-query weighs UNIT_WEIGHT alternatives
    got = weighted(queries + units)
    assert sum(g.weight for g in got) == pytest.approx(SOURCE_WEIGHT)
    assert got[-1].weight == pytest.approx(5 * got[0].weight)
    # without units, as before: every query the same share
    assert [g.weight for g in weighted(queries)] == pytest.approx([SOURCE_WEIGHT / 6] * 6)
    assert weighted([]) == []
