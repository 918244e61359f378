"""Milvus Lite after a crash: an index file cut short does not keep the collection from loading."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

from indexer.vectorstore import open_vector_store
from indexer.vectorstore_milvus import COLLECTION, MilvusVectorStore, drop_torn_index_files

DIM = 16


def unit_rows(n: int, seed: int) -> np.ndarray:
    x = np.random.default_rng(seed).normal(size=(n, DIM)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def index_files(db: Path) -> list[Path]:
    return sorted((db / "collections" / COLLECTION / "partitions").glob("*/indexes/*.idx"))


def test_only_numpy_files_shorter_than_their_header_are_dropped(tmp_path: Path) -> None:
    folder = tmp_path / "collections" / COLLECTION / "partitions" / "_pk_3" / "indexes"
    folder.mkdir(parents=True)
    whole, cut, other = folder / "a.vector.flat.idx", folder / "b.vector.flat.idx", folder / "c.vector.hnsw.idx"
    with whole.open("wb") as f:
        np.save(f, unit_rows(40, 1))
    with cut.open("wb") as f:
        np.save(f, unit_rows(40, 2))
    cut.write_bytes(cut.read_bytes()[:-100])
    other.write_bytes(b"not a numpy array, another index's own format")
    assert drop_torn_index_files(tmp_path, COLLECTION) == [cut]
    assert whole.exists() and other.exists() and not cut.exists()
    assert drop_torn_index_files(tmp_path, COLLECTION) == []


def test_collection_loads_after_an_index_file_was_cut_short(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    pytest.importorskip("milvus_lite")
    db = tmp_path / "m.db"
    first = open_vector_store("milvus", DIM, root=tmp_path, milvus_uri=str(db))
    first.warm_up()
    rows = unit_rows(30, 5)
    first.upsert("s1", "b1", list(range(30)), rows)
    first.flush()
    first.close()  # waits for the index files Milvus Lite writes after a flush
    files = index_files(db)
    assert files, "Milvus Lite wrote no index file after a flush: the layout this repair reads has changed"
    for f in files:  # what a process killed while writing them leaves
        f.write_bytes(f.read_bytes()[: f.stat().st_size // 2])

    again = open_vector_store("milvus", DIM, root=tmp_path, milvus_uri=str(db))
    with caplog.at_level("WARNING", logger="kefu.vectorstore"):
        again.warm_up()
    try:
        assert "half-written" in caplog.text
        np.testing.assert_allclose(again.fetch("s1", "b1", 30), rows, atol=1e-6)
        assert again.search("s1", "b1", rows[:1], 1)[0][0].row == 0
    finally:
        again.close()


class _FakeServer:
    """A Milvus server's client as MilvusVectorStore uses it: rows by key, read by a filter on
    shop and build, each read's level recorded; ``lagging`` rows are left out of reads that are
    not Strong, as a server's replica that has not caught up with the last writes leaves them."""

    def __init__(self, lagging: int = 0) -> None:
        self.rows: dict[str, dict[str, object]] = {}
        self.levels: list[str] = []
        self.flushes = 0
        self.lagging = lagging

    def delete(self, collection: str, ids: list[str]) -> None:
        for pk in ids:
            self.rows.pop(pk, None)

    def insert(self, collection: str, data: list[dict[str, object]]) -> None:
        self.rows.update({str(d["pk"]): d for d in data})

    def flush(self, collection: str) -> None:
        self.flushes += 1

    def query(
        self, collection: str, filter: str, output_fields: list[str], limit: int, consistency_level: str
    ) -> list[dict[str, object]]:
        self.levels.append(consistency_level)
        wanted = dict(re.findall(r'(shop|build) == "([^"]+)"', filter))
        found = [d for d in self.rows.values() if all(d[k] == v for k, v in wanted.items())][:limit]
        return found if consistency_level == "Strong" else found[: max(0, len(found) - self.lagging)]


def server_store(client: _FakeServer) -> MilvusVectorStore:
    store = MilvusVectorStore("http://milvus.example:19530", DIM)
    store._client = client
    return store


def test_a_server_load_reads_bounded_and_strong_only_when_rows_are_missing() -> None:
    rows = unit_rows(5, 9)
    caught_up = _FakeServer()
    store = server_store(caught_up)
    store.upsert("s2", "b1", range(5), unit_rows(5, 10))  # another shop's rows are not read
    store.upsert("s1", "b1", range(5), rows)
    np.testing.assert_allclose(store.fetch("s1", "b1", 5), rows, atol=1e-6)
    assert caught_up.levels == ["Bounded"]

    behind = _FakeServer(lagging=2)
    store = server_store(behind)
    store.upsert("s1", "b1", range(5), rows)
    np.testing.assert_allclose(store.fetch("s1", "b1", 5), rows, atol=1e-6)
    assert behind.levels == ["Bounded", "Strong"]


def test_a_server_seals_on_its_own_so_flush_sends_nothing() -> None:
    client = _FakeServer()
    server_store(client).flush()
    assert client.flushes == 0
