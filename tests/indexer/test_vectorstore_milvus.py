"""Milvus Lite after a crash: an index file cut short does not keep the collection from loading."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from indexer.vectorstore import open_vector_store
from indexer.vectorstore_milvus import COLLECTION, drop_torn_index_files

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
