"""FAISS vector search against a brute-force numpy oracle."""

from __future__ import annotations

import numpy as np
import pytest

from indexer.vectors import HNSW_EF_SEARCH, IVF_MIN_VECTORS, Hit, VectorIndex
from kb.errors import ConfigError, IndexStateError


def _unit(rng: np.random.Generator, n: int, dim: int) -> np.ndarray:
    x = rng.standard_normal((n, dim)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def _clustered(rng: np.random.Generator, n: int, dim: int, n_queries: int) -> tuple[np.ndarray, np.ndarray]:
    """Clustered unit vectors, like real embeddings (as in eval/bench_measure.py), and queries near them."""
    centers = rng.standard_normal((max(8, n // 200), dim)).astype(np.float32)
    x = centers[rng.integers(0, len(centers), n)] + 0.35 * rng.standard_normal((n, dim)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    q = x[rng.integers(0, n, n_queries)] + 0.2 * rng.standard_normal((n_queries, dim)).astype(np.float32)
    q /= np.linalg.norm(q, axis=1, keepdims=True)
    return x, q


def _oracle(x: np.ndarray, q: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    scores = q @ x.T
    ids = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    return ids, np.take_along_axis(scores, ids, axis=1)


def _recall(hits: list[list[Hit]], truth: np.ndarray) -> float:
    k = truth.shape[1]
    found = [len({h.chunk_id for h in row} & set(t.tolist())) / k for row, t in zip(hits, truth, strict=True)]
    return float(np.mean(found))


@pytest.fixture(scope="module")
def data() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(20260101)
    return _unit(rng, 500, 48), _unit(rng, 40, 48)


# --- exact search ------------------------------------------------------------------------------
@pytest.mark.parametrize("k", [1, 5, 10, 37])
def test_flat_matches_brute_force(data, k):
    x, q = data
    index = VectorIndex.build(x, "flat")
    assert index.kind == "flat" and index.size == len(x) and index.dim == 48
    ids, scores = _oracle(x, q, k)
    hits = index.search(q, k)
    assert len(hits) == len(q)
    for row, want_ids, want_scores in zip(hits, ids, scores, strict=True):
        assert [h.chunk_id for h in row] == want_ids.tolist()
        np.testing.assert_allclose([h.score for h in row], want_scores, atol=1e-5)
        assert [h.rank for h in row] == list(range(k))


def test_flat_finds_each_vector_itself(data):
    x, _ = data
    hits = VectorIndex.build(x, "flat").search(x[:50], 1)
    assert [row[0].chunk_id for row in hits] == list(range(50))
    np.testing.assert_allclose([row[0].score for row in hits], 1.0, atol=1e-5)


def test_float64_queries_are_accepted(data):
    x, q = data
    index = VectorIndex.build(x, "flat")
    a = index.search(q.astype(np.float64), 3)
    b = index.search(q, 3)
    assert [[h.chunk_id for h in r] for r in a] == [[h.chunk_id for h in r] for r in b]


# --- approximate search ------------------------------------------------------------------------
def test_hnsw_recall_at_10():
    rng = np.random.default_rng(7)
    x, q = _unit(rng, 2000, 32), _unit(rng, 100, 32)
    index = VectorIndex.build(x, "hnsw")
    assert index.kind == "hnsw" and index.size == 2000
    truth, _ = _oracle(x, q, 10)
    hits = index.search(q, 10)
    assert _recall(hits, truth) >= 0.95
    for row in hits:  # best first
        scores = [h.score for h in row]
        assert scores == sorted(scores, reverse=True)


def test_ivf_recall_on_enough_vectors():
    rng = np.random.default_rng(11)
    x, q = _clustered(rng, IVF_MIN_VECTORS + 4, 32, 100)
    index = VectorIndex.build(x, "ivf")
    assert index.kind == "ivf" and index.size == len(x)
    truth, _ = _oracle(x, q, 10)
    assert _recall(index.search(q, 10), truth) >= 0.9


def test_ivf_on_few_vectors_falls_back_to_exact(data):
    x, q = data
    assert len(x) < IVF_MIN_VECTORS
    index = VectorIndex.build(x, "ivf")
    assert index.kind == "flat"
    ids, scores = _oracle(x, q, 10)
    for row, want_ids, want_scores in zip(index.search(q, 10), ids, scores, strict=True):
        assert [h.chunk_id for h in row] == want_ids.tolist()
        np.testing.assert_allclose([h.score for h in row], want_scores, atol=1e-5)


# --- arguments ---------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", ["flat", "hnsw", "ivf"])
@pytest.mark.parametrize("k", [6, 7, 1000])
def test_k_larger_than_index_is_clamped(kind, k):
    rng = np.random.default_rng(3)
    x = _unit(rng, 6, 16)
    hits = VectorIndex.build(x, kind).search(_unit(rng, 2, 16), k)
    assert [len(row) for row in hits] == [6, 6]
    assert all(sorted(h.chunk_id for h in row) == list(range(6)) for row in hits)
    assert all([h.rank for h in row] == list(range(6)) for row in hits)


@pytest.mark.parametrize("k", [0, -1])
def test_k_below_one_is_a_config_error(data, k):
    x, q = data
    with pytest.raises(ConfigError, match="k="):
        VectorIndex.build(x).search(q, k)


def test_empty_query_matrix_gives_no_rows(data):
    x, _ = data
    assert VectorIndex.build(x).search(np.zeros((0, 48), dtype=np.float32), 5) == []


@pytest.mark.parametrize("shape", [(3, 47), (3, 49), (1, 8), (48 * 2,)])
def test_wrong_dimension_is_a_config_error(data, shape):
    x, _ = data
    with pytest.raises(ConfigError, match="dimension"):
        VectorIndex.build(x).search(np.ones(shape, dtype=np.float32), 3)


def test_one_dimensional_query_is_one_row(data):
    x, q = data
    index = VectorIndex.build(x)
    one = index.search(q[0], 4)
    assert len(one) == 1
    assert one == index.search(q[:1], 4)


@pytest.mark.parametrize(
    ("vectors", "kind"),
    [
        (np.zeros((0, 8), dtype=np.float32), "flat"),
        (np.ones(8, dtype=np.float32), "flat"),
        (np.ones((2, 2, 2), dtype=np.float32), "flat"),
        (np.eye(8, dtype=np.float32), "annoy"),
    ],
)
def test_build_rejects_bad_input(vectors, kind):
    with pytest.raises(ConfigError):
        VectorIndex.build(vectors, kind)


# --- persistence -------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", ["flat", "hnsw"])
def test_save_load_round_trip(tmp_path, data, kind):
    x, q = data
    index = VectorIndex.build(x, kind)
    index.save(tmp_path / "index.faiss")
    loaded = VectorIndex.load(tmp_path / "index.faiss")
    assert (loaded.kind, loaded.dim, loaded.size) == (kind, 48, len(x))
    assert loaded.search(q, 10) == index.search(q, 10)
    if kind == "hnsw":
        import faiss

        hnsw = faiss.downcast_index(loaded._index)
        assert isinstance(hnsw, faiss.IndexHNSW)
        assert hnsw.hnsw.efSearch == HNSW_EF_SEARCH


def test_save_load_round_trip_ivf(tmp_path):
    x, q = _clustered(np.random.default_rng(5), IVF_MIN_VECTORS, 16, 20)
    index = VectorIndex.build(x, "ivf")
    index.save(tmp_path / "index.faiss")
    loaded = VectorIndex.load(tmp_path / "index.faiss")
    assert (loaded.kind, loaded.dim, loaded.size) == ("ivf", 16, len(x))
    assert loaded.search(q, 10) == index.search(q, 10)


@pytest.mark.parametrize("keep", [0.0, 0.1, 0.5, 0.99])
def test_loading_a_truncated_file_is_an_index_state_error(tmp_path, data, keep):
    x, _ = data
    path = tmp_path / "index.faiss"
    VectorIndex.build(x).save(path)
    raw = path.read_bytes()
    path.write_bytes(raw[: int(len(raw) * keep)])
    with pytest.raises(IndexStateError, match="truncated or corrupt"):
        VectorIndex.load(path)


def test_loading_a_missing_file_is_an_index_state_error(tmp_path):
    with pytest.raises(IndexStateError):
        VectorIndex.load(tmp_path / "nope.faiss")
