"""The embedding cache: keys, hit/miss counting, duplicates, and vectors of the wrong shape."""

from __future__ import annotations

import sqlite3

import numpy as np
import pytest

from indexer.embcache import EmbeddingCache, cache_key
from indexer.encoder import FakeEncoder

DIM = 16


class Recorder:
    """An encode function that records every batch it was asked for."""

    def __init__(self, dim: int = DIM) -> None:
        self.enc = FakeEncoder(dim=max(dim, 8))
        self.dim = dim
        self.batches: list[list[str]] = []

    def __call__(self, texts: list[str]) -> np.ndarray:
        self.batches.append(list(texts))
        return self.enc.encode_docs(texts)[:, : self.dim]

    @property
    def texts(self) -> list[str]:
        return [t for b in self.batches for t in b]


@pytest.fixture
def cache(tmp_path):
    c = EmbeddingCache(tmp_path / "sub" / "embcache.sqlite")
    yield c
    c.close()


def test_misses_then_hits(cache):
    rec = Recorder()
    texts = ["退款怎么申请", "物流到哪了", "发票怎么开"]
    first, hits = cache.get_or_encode("m", "p", texts, rec, DIM)
    assert hits == 0
    assert sorted(rec.texts) == sorted(texts)
    assert first.shape == (3, DIM) and first.dtype == np.float32
    np.testing.assert_allclose(first, rec.enc.encode_docs(texts)[:, :DIM], atol=1e-7)

    rec.batches.clear()
    second, hits = cache.get_or_encode("m", "p", texts, rec, DIM)
    assert hits == 3 and rec.batches == []  # nothing encoded
    np.testing.assert_array_equal(first, second)


def test_partial_hits_encode_only_the_missing(cache):
    rec = Recorder()
    cache.get_or_encode("m", "p", ["a1", "b2"], rec, DIM)
    rec.batches.clear()
    out, hits = cache.get_or_encode("m", "p", ["b2", "c3", "a1", "d4"], rec, DIM)
    assert hits == 2
    assert sorted(rec.texts) == ["c3", "d4"]
    np.testing.assert_allclose(out, rec.enc.encode_docs(["b2", "c3", "a1", "d4"])[:, :DIM], atol=1e-7)


def test_duplicate_texts_in_one_call_are_encoded_once(cache):
    rec = Recorder()
    out, hits = cache.get_or_encode("m", "p", ["同一句", "另一句", "同一句", "同一句"], rec, DIM)
    assert hits == 0  # duplicates of a miss are misses too, not hits
    assert sorted(rec.texts) == ["另一句", "同一句"]
    assert out.shape == (4, DIM)
    np.testing.assert_array_equal(out[0], out[2])
    np.testing.assert_array_equal(out[0], out[3])
    assert not np.array_equal(out[0], out[1])

    rec.batches.clear()
    out2, hits = cache.get_or_encode("m", "p", ["同一句", "同一句"], rec, DIM)
    assert hits == 2 and rec.batches == []
    np.testing.assert_array_equal(out2[0], out[0])


def test_empty_input(cache):
    rec = Recorder()
    out, hits = cache.get_or_encode("m", "p", [], rec, DIM)
    assert out.shape == (0, DIM) and hits == 0 and rec.batches == []


@pytest.mark.parametrize(
    ("other_model", "other_prompt"),
    [("model-b", "query: "), ("model-a", "passage: "), ("model-a", "")],
)
def test_model_id_and_prompt_are_part_of_the_key(cache, other_model, other_prompt):
    rec = Recorder()
    cache.get_or_encode("model-a", "query: ", ["退款"], rec, DIM)
    rec.batches.clear()
    _, hits = cache.get_or_encode(other_model, other_prompt, ["退款"], rec, DIM)
    assert hits == 0 and rec.texts == ["退款"]
    # Both entries now exist side by side.
    _, hits = cache.get_or_encode("model-a", "query: ", ["退款"], rec, DIM)
    assert hits == 1


def test_cache_key_is_unambiguous():
    keys = {
        cache_key("m", "p", "t"),
        cache_key("m2", "p", "t"),
        cache_key("m", "p2", "t"),
        cache_key("m", "p", "t2"),
        cache_key("mp", "", "t"),
        cache_key("m", "pt", ""),
    }
    assert len(keys) == 6
    assert cache_key("m", "p", "t") == cache_key("m", "p", "t")


def test_vector_of_wrong_shape_is_ignored_and_replaced(tmp_path):
    path = tmp_path / "embcache.sqlite"
    small = EmbeddingCache(path)
    small.get_or_encode("m", "p", ["退款", "物流"], Recorder(8), 8)
    small.close()

    cache = EmbeddingCache(path)
    rec = Recorder(DIM)
    out, hits = cache.get_or_encode("m", "p", ["退款", "物流"], rec, DIM)
    assert hits == 0 and sorted(rec.texts) == ["物流", "退款"]
    assert out.shape == (2, DIM)
    rec.batches.clear()
    _, hits = cache.get_or_encode("m", "p", ["退款", "物流"], rec, DIM)
    assert hits == 2 and rec.batches == []
    cache.close()


def _put_blob(cache: EmbeddingCache, text: str, blob: bytes) -> None:
    with sqlite3.connect(cache.path) as db:
        db.execute("INSERT OR REPLACE INTO emb (key, vec) VALUES (?, ?)", (cache_key("m", "p", text), blob))


@pytest.mark.parametrize(
    "blob",
    [
        np.zeros(3, dtype=np.float32).tobytes(),
        np.zeros(DIM, dtype=np.float64).tobytes(),  # right length in values, wrong dtype: 2·DIM floats
        b"",
    ],
)
def test_stored_blob_of_other_size_is_ignored(cache, blob):
    _put_blob(cache, "退款", blob)
    rec = Recorder()
    out, hits = cache.get_or_encode("m", "p", ["退款"], rec, DIM)
    assert hits == 0 and rec.texts == ["退款"]
    np.testing.assert_allclose(out[0], rec.enc.encode_docs(["退款"])[0, :DIM], atol=1e-7)


def test_stored_blob_of_odd_length_is_ignored(cache):
    _put_blob(cache, "退款", b"\x00\x01\x02")
    rec = Recorder()
    out, hits = cache.get_or_encode("m", "p", ["退款"], rec, DIM)
    assert hits == 0 and rec.texts == ["退款"] and out.shape == (1, DIM)


def test_persists_across_reopen(tmp_path):
    path = tmp_path / "embcache.sqlite"
    first = EmbeddingCache(path)
    rec = Recorder()
    a, _ = first.get_or_encode("m", "p", ["退款", "物流"], rec, DIM)
    first.close()
    again = EmbeddingCache(path)
    rec2 = Recorder()
    b, hits = again.get_or_encode("m", "p", ["物流", "退款"], rec2, DIM)
    again.close()
    assert hits == 2 and rec2.batches == []
    np.testing.assert_array_equal(a[::-1], b)


def test_more_texts_than_sqlite_parameters_per_query(cache):
    rec = Recorder()
    texts = [f"问题{i}" for i in range(1234)]
    first, _ = cache.get_or_encode("m", "p", texts, rec, DIM)
    rec.batches.clear()
    again, hits = cache.get_or_encode("m", "p", texts, rec, DIM)
    assert hits == len(texts) and rec.batches == []
    np.testing.assert_array_equal(first, again)


def test_cache_can_be_deleted_between_uses(tmp_path):
    path = tmp_path / "embcache.sqlite"
    c = EmbeddingCache(path)
    c.get_or_encode("m", "p", ["退款"], Recorder(), DIM)
    c.close()
    for p in tmp_path.glob("embcache.sqlite*"):
        p.unlink()
    c = EmbeddingCache(path)
    rec = Recorder()
    _, hits = c.get_or_encode("m", "p", ["退款"], rec, DIM)
    c.close()
    assert hits == 0 and rec.texts == ["退款"]
