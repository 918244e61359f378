"""One test suite, both vector store backends: FAISS files and Milvus Lite in a temporary folder."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from indexer.vectorstore import (
    FaissVectorStore,
    VectorStore,
    VectorStoreKind,
    check_shop_id,
    open_vector_store,
)
from kb.errors import ConfigError, IndexStateError

DIM = 16


def unit_rows(n: int, seed: int) -> np.ndarray:
    x = np.random.default_rng(seed).normal(size=(n, DIM)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


@pytest.fixture(params=[VectorStoreKind.FAISS, VectorStoreKind.MILVUS], ids=lambda k: k.value)
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[VectorStore]:
    if request.param is VectorStoreKind.MILVUS:
        pytest.importorskip("pymilvus")
        pytest.importorskip("milvus_lite")
    s = open_vector_store(request.param, DIM, root=tmp_path / "vectors", milvus_uri=str(tmp_path / "m" / "kefu.db"))
    s.warm_up()
    yield s
    s.close()


def test_protocol_and_kind(store: VectorStore) -> None:
    assert isinstance(store, VectorStore)
    assert store.dim == DIM


def test_search_finds_each_row_itself_with_exact_cosines(store: VectorStore) -> None:
    x = unit_rows(40, 1)
    store.upsert("shop-a", "b1", list(range(40)), x)
    assert store.count("shop-a", "b1") == 40
    store.flush()  # searches see the rows before and after a flush alike
    hits = store.search("shop-a", "b1", x[[3, 17]], 40)
    assert [h[0].row for h in hits] == [3, 17]
    expected = x[[3, 17]] @ x.T
    for row_hits, exp in zip(hits, expected, strict=True):
        assert len(row_hits) == 40
        assert [h.rank for h in row_hits] == list(range(40))
        scores = [h.score for h in row_hits]
        assert scores == sorted(scores, reverse=True)
        for h in row_hits:
            assert h.score == pytest.approx(float(exp[h.row]), abs=1e-5)


def test_shops_and_builds_are_isolated(store: VectorStore) -> None:
    a, b = unit_rows(10, 2), unit_rows(12, 3)
    store.upsert("shop-a", "b1", list(range(10)), a)
    store.upsert("shop-b", "b1", list(range(12)), b)
    store.upsert("shop-a", "b2", list(range(5)), b[:5])
    # shop-b's rows are the nearest vectors of this query, yet shop-a's search never returns them
    (hits,) = store.search("shop-a", "b1", b[0], 50)
    assert len(hits) == 10
    assert {h.row for h in hits} == set(range(10))
    assert max(h.score for h in hits) < 0.999
    assert store.count("shop-a") == 15
    assert store.count("shop-b") == 12
    assert store.search("shop-c", "b1", a[0], 5) == [[]]


def test_upsert_replaces_rows(store: VectorStore) -> None:
    x = unit_rows(6, 4)
    store.upsert("s1", "b1", list(range(6)), x)
    y = unit_rows(2, 5)
    store.upsert("s1", "b1", [0, 1], y)
    assert store.count("s1", "b1") == 6
    (hits,) = store.search("s1", "b1", y[1], 1)
    assert hits[0].row == 1 and hits[0].score == pytest.approx(1.0, abs=1e-5)


def test_delete_all_or_all_but_kept_builds(store: VectorStore) -> None:
    x = unit_rows(4, 6)
    for build in ("b1", "b2", "b3"):
        store.upsert("s1", build, list(range(4)), x)
    store.upsert("s2", "b1", list(range(4)), x)
    store.delete("s1", keep=["b3", "b2"])
    assert store.count("s1", "b1") == 0
    assert store.count("s1", "b2") == 4 and store.count("s1", "b3") == 4
    store.delete("s1")
    assert store.count("s1") == 0
    assert store.count("s2") == 4  # another shop is never touched


def test_bad_input_is_one_clear_error(store: VectorStore) -> None:
    with pytest.raises(ConfigError, match="safe slug"):
        store.upsert("../etc", "b1", [0], unit_rows(1, 7))
    with pytest.raises(ConfigError, match="safe slug"):
        store.search('a" or shop != "', "b1", unit_rows(1, 7), 3)
    with pytest.raises(ConfigError, match="dimension"):
        store.upsert("s1", "b1", [0], np.zeros((1, DIM + 1), dtype=np.float32))
    with pytest.raises(ConfigError, match="row ids"):
        store.upsert("s1", "b1", [0, 1], unit_rows(1, 7))
    with pytest.raises(ConfigError, match="at most"):
        store.upsert("s1", "b1", [16_384], unit_rows(1, 7))
    with pytest.raises(ConfigError, match="k=0"):
        store.search("s1", "b1", unit_rows(1, 7), 0)


def test_reopened_store_keeps_its_vectors(tmp_path: Path) -> None:
    for kind in VectorStoreKind:
        if kind is VectorStoreKind.MILVUS:
            pytest.importorskip("milvus_lite")
        args = {"root": tmp_path / "v", "milvus_uri": str(tmp_path / "m.db")}
        first = open_vector_store(kind, DIM, **args)  # type: ignore[arg-type]
        first.warm_up()
        first.upsert("s1", "b1", [0, 1], unit_rows(2, 8))
        first.close()
        again = open_vector_store(kind, DIM, **args)  # type: ignore[arg-type]
        again.warm_up()
        assert again.count("s1", "b1") == 2, kind
        again.close()


def test_faiss_lru_is_bounded(tmp_path: Path) -> None:
    store = FaissVectorStore(tmp_path, DIM, cache=3)
    store.warm_up()
    for i in range(10):
        store.upsert(f"s{i}", "b1", [0], unit_rows(1, i))
    for i in range(10):
        assert store.search(f"s{i}", "b1", unit_rows(1, i), 1)[0][0].row == 0
    assert len(store._open) == 3


def test_unknown_kind_and_unreachable_milvus(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="allowed: faiss, milvus"):
        open_vector_store("redis", DIM, root=tmp_path)
    pytest.importorskip("pymilvus")
    bad = open_vector_store("milvus", DIM, root=tmp_path, milvus_uri="http://127.0.0.1:9")
    with pytest.raises(IndexStateError, match="cannot reach Milvus"):
        bad.warm_up()


def test_milvus_collection_of_another_dimension_is_refused(tmp_path: Path) -> None:
    pytest.importorskip("milvus_lite")
    uri = str(tmp_path / "m.db")
    first = open_vector_store("milvus", DIM, root=tmp_path, milvus_uri=uri)
    first.warm_up()
    first.close()
    other = open_vector_store("milvus", DIM * 2, root=tmp_path, milvus_uri=uri)
    with pytest.raises(IndexStateError, match="16-dimensional"):
        other.warm_up()


@pytest.mark.parametrize("shop", ["a", "acme-shoes", "shop_1", "x" * 64])
def test_safe_slugs(shop: str) -> None:
    assert check_shop_id(shop) == shop


@pytest.mark.parametrize("shop", ["", "A", "-a", "a-", "a b", "a/b", "店铺", "x" * 65, "a.b"])
def test_unsafe_slugs(shop: str) -> None:
    with pytest.raises(ConfigError):
        check_shop_id(shop)


def test_fetch_returns_every_row_in_row_order(store: VectorStore) -> None:
    x = unit_rows(30, 9)
    order = list(range(30))[::-1]  # written in another order than the rows
    store.upsert("s1", "b1", order, x[order])
    store.flush()
    got = store.fetch("s1", "b1", 30)
    assert got.shape == (30, DIM) and got.dtype == np.float32
    assert np.array_equal(got, x)  # the stored float32 values, exactly
    store.upsert("s2", "b1", list(range(5)), x[:5])
    with pytest.raises(IndexStateError, match="kefu shops rebuild s2"):
        store.fetch("s2", "b1", 6)  # a row missing from the store
    with pytest.raises(IndexStateError, match="holds 0 rows"):
        store.fetch("s3", "b1", 4)
    assert store.fetch("s3", "b1", 0).shape[0] == 0


def test_holds_every_row_of_a_build(store: VectorStore) -> None:
    store.upsert("s1", "b1", list(range(8)), unit_rows(8, 10))
    assert store.holds("s1", "b1", 8)
    assert not store.holds("s1", "b1", 9) and not store.holds("s1", "b2", 8)
    assert store.holds("s9", "b1", 0)


def test_drop_one_build_by_key(store: VectorStore) -> None:
    x = unit_rows(6, 11)
    store.upsert("s1", "b1", list(range(6)), x)
    store.upsert("s1", "b2", list(range(6)), x)
    store.upsert("s2", "b1", list(range(6)), x)
    store.drop("s1", "b1", 6)
    assert store.count("s1", "b1") == 0 and store.holds("s1", "b2", 6) and store.holds("s2", "b1", 6)
    store.drop("s1", "b9", 3)  # nothing there: nothing to do
