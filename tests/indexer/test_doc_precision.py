"""Documents embedded in bfloat16 where the CPU does it natively (``KEFU_DOC_PRECISION``): the
choice from the CPU's flags, vectors close to float32's, queries untouched, and a cache and a
manifest that keep the two precisions apart."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest

import indexer.encoders.library as library
from indexer.build import build_and_swap, build_index
from indexer.chunking import QUESTION_KINDS
from indexer.embcache import EmbeddingCache
from indexer.encoders import FakeEncoder, LibraryEncoder, SentenceTransformerModel
from indexer.encoders.base import PROFILES, doc_precision_of
from indexer.store import IndexStore
from kb.errors import ConfigError
from kb.loader import load_kb
from kb.modes import DocPrecision
from kb.settings import Settings
from tests.indexer.test_encoder import TEXTS, _tiny_st_model

FLAGS = "processor\t: 0\nflags\t\t: fpu sse2 avx2 avx512f {extra}\nbogomips\t: 4000\n"


@pytest.mark.parametrize(
    ("extra", "native"),
    [("amx_bf16 amx_tile", True), ("avx512_bf16", True), ("avx512_vnni", False), ("", False)],
)
def test_native_bf16_reads_the_cpu_flags(tmp_path: Path, extra: str, native: bool) -> None:
    info = tmp_path / "cpuinfo"
    info.write_text(FLAGS.format(extra=extra), "utf-8")
    assert library.native_bf16(info) is native


def test_no_cpu_flags_to_read_means_float32(tmp_path: Path) -> None:
    assert library.native_bf16(tmp_path / "missing") is False
    (tmp_path / "odd").write_text("model name: something\n", "utf-8")
    assert library.native_bf16(tmp_path / "odd") is False


@pytest.mark.parametrize("native", [True, False])
def test_auto_follows_the_cpu_and_explicit_choices_stand(monkeypatch: pytest.MonkeyPatch, native: bool) -> None:
    monkeypatch.setattr(library, "native_bf16", lambda: native)
    assert library.resolve_doc_precision("auto") is (DocPrecision.BF16 if native else DocPrecision.FP32)
    assert library.resolve_doc_precision(DocPrecision.FP32) is DocPrecision.FP32
    assert library.resolve_doc_precision("bf16") is DocPrecision.BF16


def test_an_unknown_precision_is_refused_with_the_allowed_ones(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ConfigError, match="document precision 'fp16' is unknown; allowed: auto, fp32, bf16"):
        library.resolve_doc_precision("fp16")
    monkeypatch.setenv("KEFU_DOC_PRECISION", "fp16")
    with pytest.raises(ConfigError, match="KEFU_DOC_PRECISION"):
        Settings.load()


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _tiny_st_model(tmp_path_factory.mktemp("tiny"), layers=2)


def _encoder(tiny: Path, precision: DocPrecision) -> LibraryEncoder:
    enc = LibraryEncoder(SentenceTransformerModel(str(tiny), 1, precision), "tiny", PROFILES["plain"])
    enc.prepare()
    return enc


def test_bf16_documents_are_close_to_float32_and_queries_are_untouched(tiny: Path) -> None:
    fp32, bf16 = _encoder(tiny, DocPrecision.FP32), _encoder(tiny, DocPrecision.BF16)
    assert (doc_precision_of(fp32), doc_precision_of(bf16)) == (DocPrecision.FP32, DocPrecision.BF16)
    a, b = fp32.encode_docs(TEXTS), bf16.encode_docs(TEXTS)
    assert a.dtype == b.dtype == np.float32 and a.shape == b.shape
    assert np.allclose(np.linalg.norm(b, axis=1), 1.0, atol=1e-5)
    assert (a * b).sum(axis=1).min() > 0.99  # a random two-layer model; the real one: ≥ 0.99999
    np.testing.assert_array_equal(fp32.encode_queries(TEXTS), bf16.encode_queries(TEXTS))
    assert bf16.encode_docs([]).shape == (0, bf16.dim)


class _Bf16Fake(FakeEncoder):
    """The fake encoder, saying its documents are bf16 (and making them slightly different)."""

    doc_precision = DocPrecision.BF16

    def encode_docs(self, texts: Sequence[str], progress: bool = False) -> np.ndarray:
        v = super().encode_docs(texts) + 1e-3
        return (v / np.linalg.norm(v, axis=1, keepdims=True)).astype(np.float32)


def test_the_cache_and_the_manifest_keep_the_precisions_apart(tmp_path: Path, tiny_kb_dir: Path) -> None:
    kb = load_kb(tiny_kb_dir, strict=False)
    cache = EmbeddingCache(tmp_path / "emb.sqlite")
    first = build_index(kb, FakeEncoder(dim=128), 60, cache=cache)
    assert first.manifest.doc_precision == "fp32"
    again = build_index(kb, _Bf16Fake(dim=128), 60, cache=cache)
    assert again.manifest.doc_precision == "bf16"
    questions = sum(c.kind in QUESTION_KINDS for c in again.chunks)
    # the questions (query path) come from the cache; no float32 document vector serves a bf16 build
    assert questions + first.manifest.counts["anchors"] == again.manifest.cache_hits
    docs = [i for i, c in enumerate(again.chunks) if c.kind not in QUESTION_KINDS]
    assert docs and not np.allclose(first.vectors[docs], again.vectors[docs])
    assert build_index(kb, _Bf16Fake(dim=128), 60, cache=cache).manifest.cache_hits == len(again.chunks) + len(
        again.anchors
    )


def test_a_build_in_another_precision_is_not_up_to_date(tmp_path: Path, tiny_kb_dir: Path) -> None:
    kb = load_kb(tiny_kb_dir, strict=False)
    store = IndexStore(tmp_path / "index", 3)
    assert not build_and_swap(kb, FakeEncoder(dim=128), store, 60).unchanged
    assert build_and_swap(kb, FakeEncoder(dim=128), store, 60).unchanged
    assert not build_and_swap(kb, _Bf16Fake(dim=128), store, 60).unchanged
    assert store.load_current(None).manifest.doc_precision == "bf16"
    assert build_and_swap(kb, _Bf16Fake(dim=128), store, 60).unchanged
