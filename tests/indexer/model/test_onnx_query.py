"""The agreement check every ONNX query graph passes before it serves."""

from __future__ import annotations

import numpy as np
import pytest

from indexer.model.onnx_query import MIN_COSINE, worst_probe_cosine


def _unit(v: np.ndarray) -> np.ndarray:
    return v / np.linalg.norm(v, axis=1, keepdims=True)


@pytest.mark.parametrize("variant", ["int8", "fp32"])
def test_identical_vectors_agree(variant: str):
    ref = _unit(np.random.default_rng(0).normal(size=(4, 8)))
    worst, ok = worst_probe_cosine(ref, ref, variant)
    assert worst == pytest.approx(1.0) and ok


@pytest.mark.parametrize(
    ("cosine", "variant", "ok"), [(0.99, "int8", True), (0.97, "int8", False), (0.99, "fp32", False)]
)
def test_the_worst_row_decides(cosine: float, variant: str, ok: bool):
    ref = np.eye(3)
    got = np.eye(3)
    got[1] = [np.sqrt(1 - cosine**2), cosine, 0.0]  # one row off by the given cosine
    worst, agrees = worst_probe_cosine(got, ref, variant)
    assert worst == pytest.approx(cosine)
    assert agrees is ok and (worst >= MIN_COSINE[variant]) is ok
