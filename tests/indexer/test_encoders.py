"""One encoder class per runtime behind load_encoder: which one serves, cheap constructors, the
query policy each reports (tests/indexer/test_encoder.py holds the vector-level checks)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from indexer.encoders import (
    CAUTIOUS_POLICY,
    ONNX_QUERY_BATCH,
    PROFILES,
    FakeEncoder,
    LibraryEncoder,
    OnnxEncoder,
    QueryPolicy,
    QueryRuntime,
    SentenceTransformerModel,
    StandaloneOnnxEncoder,
    TorchEncoder,
    load_encoder,
    policy_of,
)
from kb.errors import ConfigError
from kb.settings import Settings
from tests.indexer.test_encoder import TEXTS, _tiny_st_model


def _settings(tmp_path: Path, model: Path, **kw: object) -> Settings:
    return Settings(model=str(model), model_cache=tmp_path / "cache", **kw)  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _tiny_st_model(tmp_path_factory.mktemp("tiny"), layers=4)


def test_each_runtime_is_its_own_class_and_reports_its_policy(tmp_path: Path, tiny: Path) -> None:
    onnx = load_encoder(_settings(tmp_path, tiny, batch_size=8, torch_threads=2))
    assert type(onnx) is OnnxEncoder  # the first start exports the graph
    assert onnx.query_policy == QueryPolicy(
        "onnx-int8", batch_invariant=True, parallelism=2, max_batch=ONNX_QUERY_BATCH
    )
    standalone = load_encoder(_settings(tmp_path, tiny, batch_size=8, torch_threads=2))
    assert type(standalone) is StandaloneOnnxEncoder and standalone.query_policy == onnx.query_policy
    torch_int8 = load_encoder(_settings(tmp_path, tiny, batch_size=8, query_runtime="torch"))
    assert type(torch_int8) is TorchEncoder
    assert torch_int8.query_policy == QueryPolicy("torch-int8", batch_invariant=False, parallelism=1, max_batch=8)
    torch_fp32 = load_encoder(_settings(tmp_path, tiny, batch_size=8, query_runtime="torch", query_int8=False))
    assert torch_fp32.query_policy == QueryPolicy("torch-fp32", batch_invariant=True, parallelism=1, max_batch=8)
    # documents have one path whatever the query runtime
    docs = onnx.encode_docs(TEXTS)
    for enc in (standalone, torch_int8, torch_fp32):
        np.testing.assert_array_equal(enc.encode_docs(TEXTS), docs)


def test_the_standalone_tokenizer_reads_one_text_as_a_batch_of_one(tmp_path: Path, tiny: Path) -> None:
    """One text is tokenized on the calling thread (``encode``), a batch on the library's pool
    (``encode_batch``): the same ids, mask and type ids either way."""
    load_encoder(_settings(tmp_path, tiny, batch_size=8))  # the first start exports the graph
    standalone = load_encoder(_settings(tmp_path, tiny, batch_size=8))
    assert type(standalone) is StandaloneOnnxEncoder and standalone._tokenizer is not None
    for text in TEXTS:
        one, batch = standalone._tokenizer([text]), standalone._tokenizer([text, text])
        assert one.keys() == batch.keys()
        for name, ids in one.items():
            np.testing.assert_array_equal(ids, batch[name][:1])


def test_a_model_whose_modules_cannot_run_directly_gets_the_library_encoder(
    tmp_path: Path, tiny: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    import indexer.encoders.factory as factory

    monkeypatch.setattr(factory, "direct_path_agrees", lambda *args: False)
    enc = load_encoder(_settings(tmp_path, tiny, batch_size=8))
    assert type(enc) is LibraryEncoder
    assert enc.query_runtime == "torch" and not enc.query_int8
    assert enc.query_policy == QueryPolicy("torch-fp32-library", batch_invariant=True, parallelism=1, max_batch=8)
    assert "ONNX query encoding is not available" in caplog.text and "int8 query encoding" in caplog.text
    np.testing.assert_array_equal(enc.encode_queries(TEXTS), enc.encode_queries_reference(TEXTS))
    assert not list((tmp_path / "cache").glob("onnx/*"))  # nothing exported


@pytest.mark.parametrize("cls", [LibraryEncoder, TorchEncoder, OnnxEncoder, StandaloneOnnxEncoder])
def test_constructors_only_store_their_arguments(tmp_path: Path, tiny: Path, cls: type) -> None:
    model = SentenceTransformerModel(str(tiny), threads=1)
    kw = {"cache": tmp_path / "cache", "int8": True} if issubclass(cls, OnnxEncoder) else {}
    enc = cls(model, "tiny", PROFILES["plain"], 8, **kw)
    assert not model.loaded and not (tmp_path / "cache").exists()
    with pytest.raises(RuntimeError, match="call prepare"):
        _ = enc.dim


def test_load_encoder_maps_the_settings_onto_keyword_arguments(monkeypatch: pytest.MonkeyPatch) -> None:
    import indexer.encoders.factory as factory

    seen: dict[str, object] = {}
    monkeypatch.setattr(factory, "open_encoder", lambda model, **kw: seen.update(model=model, **kw))
    s = Settings(model="BAAI/bge-small-zh-v1.5", model_profile="e5", doc_prompt="", query_runtime="torch")
    load_encoder(s)
    assert seen["model"] == s.model and seen["query_runtime"] is QueryRuntime.TORCH
    assert seen["profile"] == factory.Profile("e5", "query: ", "")  # e5's query prompt, the given doc prompt
    assert {k: seen[k] for k in ("model_cache", "batch_size", "query_int8", "torch_threads")} == {
        "model_cache": s.model_cache,
        "batch_size": s.batch_size,
        "query_int8": s.query_int8,
        "torch_threads": s.torch_threads,
    }


def test_query_runtime_and_policy_name_what_is_allowed() -> None:
    assert QueryRuntime.parse("onnx") is QueryRuntime.ONNX
    with pytest.raises(ConfigError, match="allowed: onnx, torch"):
        QueryRuntime.parse("tensorrt")
    with pytest.raises(ConfigError, match="max_batch ≥ 1"):
        QueryPolicy("x", batch_invariant=True, max_batch=0)


def test_an_encoder_reporting_no_policy_gets_the_cautious_one() -> None:
    class Minimal:
        model_id, dim, profile = "m", 8, PROFILES["plain"]

        def encode_queries(self, texts: object) -> np.ndarray:
            return np.zeros((0, 8), dtype=np.float32)

        def encode_docs(self, texts: object, progress: bool = False) -> np.ndarray:
            return np.zeros((0, 8), dtype=np.float32)

    assert policy_of(Minimal()) == CAUTIOUS_POLICY and not CAUTIOUS_POLICY.batch_invariant
    fake = FakeEncoder(query_path="fake-int8", batch_invariant=False)
    assert policy_of(fake) == QueryPolicy("fake-int8", batch_invariant=False, parallelism=1, max_batch=32)
