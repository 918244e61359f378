"""Encoders: profiles, the fake encoder, and any sentence-transformers model by path."""

from __future__ import annotations

import numpy as np
import pytest

from indexer.encoder import PROFILES, FakeEncoder, detect_profile, load_encoder, resolve_profile
from kb.errors import ConfigError, ModelError
from kb.settings import Settings


@pytest.mark.parametrize(
    ("model", "profile"),
    [
        ("builtin:multilingual-e5-small", "e5"),
        ("intfloat/multilingual-e5-base", "e5"),
        ("BAAI/bge-small-zh-v1.5", "bge-zh"),
        ("BAAI/bge-small-en-v1.5", "bge-en"),
        ("/models/my-own-model", "plain"),
    ],
)
def test_profile_detection(model, profile):
    assert detect_profile(model).name == profile


def test_profile_override_and_prompt_override():
    p = resolve_profile("BAAI/bge-small-zh-v1.5", model_profile="e5", doc_prompt="")
    assert p.query_prompt == "query: " and p.doc_prompt == ""


def test_unknown_profile_names_the_allowed_ones():
    with pytest.raises(ConfigError, match="e5, bge-zh, bge-en, plain"):
        resolve_profile("builtin:multilingual-e5-small", model_profile="nope")


def test_fake_encoder_is_deterministic_and_normalised():
    enc = FakeEncoder(dim=32)
    a = enc.encode_queries(["退款怎么申请", "退款怎么申请", ""])
    assert a.shape == (3, 32) and a.dtype == np.float32
    np.testing.assert_array_equal(a[0], a[1])
    np.testing.assert_allclose(np.linalg.norm(a, axis=1), 1.0, rtol=1e-6)
    assert enc.encode_docs([]).shape == (0, 32)


def test_fake_encoder_similarity_tracks_shared_characters():
    enc = FakeEncoder(dim=256)
    v = enc.encode_queries(["怎么申请退款", "申请退款的方法", "明天天气晴朗"])
    assert v[0] @ v[1] > v[0] @ v[2]


def _tiny_st_model(path, layers=1):
    """A sentence-transformers model built here, from nothing: no download."""
    from sentence_transformers import SentenceTransformer
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import BertConfig, BertModel, PreTrainedTokenizerFast

    from indexer.model.convert import st_modules

    Transformer, Pooling, _ = st_modules()

    chars = sorted(set("退款怎么申请物流查询天气今天明天的了吗我要人工客服"))
    vocab = {"[PAD]": 0, "[UNK]": 1, "[CLS]": 2, "[SEP]": 3, **{c: i + 4 for i, c in enumerate(chars)}}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Split("", "isolated")
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="[PAD]", unk_token="[UNK]")
    hf = path / "hf"
    cfg = BertConfig(
        vocab_size=len(vocab),
        hidden_size=16,
        num_hidden_layers=layers,
        num_attention_heads=2,
        intermediate_size=32,
    )
    BertModel(cfg, add_pooling_layer=False).save_pretrained(hf)
    fast.save_pretrained(hf)
    st = SentenceTransformer(modules=[Transformer(str(hf)), Pooling(16, "mean")], device="cpu")
    out = path / "tiny"
    st.save(str(out))
    return out


def _settings(tmp_path, model_dir, **kw) -> Settings:
    """Settings for a tiny model, with its exported graphs kept in the test's own folder."""
    return Settings(model=str(model_dir), model_cache=tmp_path / "cache", **kw)


def test_any_local_sentence_transformers_model_by_setting_alone(tmp_path):
    model_dir = _tiny_st_model(tmp_path)
    enc = load_encoder(_settings(tmp_path, model_dir))
    assert enc.dim == 16
    assert enc.profile.name == "plain"
    v = enc.encode_queries(["我要人工客服", "退款怎么申请"])
    assert v.shape == (2, 16)
    np.testing.assert_allclose(np.linalg.norm(v, axis=1), 1.0, rtol=1e-5)
    assert enc.encode_docs([]).shape == (0, 16)


def test_missing_local_path_is_a_clear_error(tmp_path):
    with pytest.raises(ModelError, match="does not exist"):
        load_encoder(Settings(model=str(tmp_path / "nope")))


def test_all_profiles_listed():
    assert set(PROFILES) == {"e5", "bge-zh", "bge-en", "plain"}


TEXTS = ["我要人工客服", "退款", "今天物流怎么查询了吗", "明天的天气", "退款怎么申请我要人工客服今天明天"]


def _cos_rows(a, b):
    return np.sum(a * b, axis=1)


@pytest.mark.parametrize("runtime", ["torch", "onnx"])
def test_float32_query_path_matches_the_library_row_for_row(tmp_path, runtime):
    # float32: the direct torch path and the exported graph must equal ST's encode(), and the
    # length-sorted sub-batches must come back in the caller's order.
    s = _settings(tmp_path, _tiny_st_model(tmp_path), batch_size=2, query_int8=False, query_runtime=runtime)
    enc = load_encoder(s)
    assert enc.query_runtime == runtime and not enc.query_int8
    got = enc.encode_queries(TEXTS)
    ref = np.vstack([enc.encode_queries_reference([t]) for t in TEXTS])
    assert _cos_rows(got, ref).min() > 0.9999


@pytest.mark.parametrize("runtime", ["torch", "onnx"])
def test_int8_query_layers_stay_close_and_leave_documents_alone(tmp_path, runtime):
    enc = load_encoder(_settings(tmp_path, _tiny_st_model(tmp_path, layers=4), batch_size=2, query_runtime=runtime))
    assert enc.query_int8 and enc.query_runtime == runtime
    docs_before = enc.encode_docs(TEXTS)
    got = enc.encode_queries(TEXTS)
    ref = enc.encode_queries_reference(TEXTS)
    assert not np.allclose(got, ref)  # the int8 layers really ran
    assert _cos_rows(got, ref).min() > 0.95
    # the float32 stack is back in place: documents encode exactly as before
    np.testing.assert_array_equal(enc.encode_docs(TEXTS), docs_before)


def test_torch_int8_vectors_depend_on_the_batch_and_say_so(tmp_path):
    """Why the build encodes stored questions one per call on torch's int8 path (indexer.build)."""
    enc = load_encoder(_settings(tmp_path, _tiny_st_model(tmp_path, layers=4), batch_size=8, query_runtime="torch"))
    assert not enc.query_policy.batch_invariant and enc.query_policy.path == "torch-int8"
    alone = np.vstack([enc.encode_queries([t]) for t in TEXTS])
    assert not np.allclose(enc.encode_queries(TEXTS), alone, atol=1e-6)


@pytest.mark.parametrize("int8", [True, False])
def test_onnx_vectors_do_not_depend_on_the_batch(tmp_path, int8):
    """A query's vector is the same alone, in any batch and at any position: answers do not
    change under load (the int8 graph would otherwise share one activation scale per run)."""
    s = _settings(tmp_path, _tiny_st_model(tmp_path, layers=4), batch_size=8, query_runtime="onnx", query_int8=int8)
    enc = load_encoder(s)
    assert enc.query_policy.batch_invariant and enc.query_policy.path == f"onnx-{'int8' if int8 else 'fp32'}"
    texts = [*TEXTS, "退款", "我要人工客服今天明天的物流查询怎么申请了吗"]  # lengths that pad the others
    alone = np.vstack([enc.encode_queries([t]) for t in texts])
    np.testing.assert_array_equal(enc.encode_queries(texts), alone)
    np.testing.assert_array_equal(enc.encode_queries(texts[::-1]), alone[::-1])


@pytest.mark.parametrize("runtime", ["torch", "onnx"])
def test_int8_can_be_switched_off(tmp_path, runtime):
    s = _settings(tmp_path, _tiny_st_model(tmp_path, layers=4), query_int8=False, query_runtime=runtime)
    enc = load_encoder(s)
    assert not enc.query_int8
    assert enc.query_policy.batch_invariant and enc.query_policy.path == f"{runtime}-fp32"
    assert _cos_rows(enc.encode_queries(TEXTS), enc.encode_queries_reference(TEXTS)).min() > 0.9999


def _graphs(tmp_path):
    return sorted((tmp_path / "cache" / "onnx").glob("*.onnx"))


def test_the_exported_graph_is_cached_and_a_corrupt_one_is_exported_again(tmp_path):
    s = _settings(tmp_path, _tiny_st_model(tmp_path, layers=4))
    first = load_encoder(s)
    (graph,) = _graphs(tmp_path)
    expected = first.encode_queries(TEXTS)
    stamp = graph.stat().st_mtime_ns
    assert load_encoder(s).query_runtime == "onnx"
    assert graph.stat().st_mtime_ns == stamp  # loaded from the cache, not exported again
    graph.write_bytes(b"not an onnx graph")
    again = load_encoder(s)
    assert again.query_runtime == "onnx" and _graphs(tmp_path) == [graph]
    np.testing.assert_allclose(again.encode_queries(TEXTS), expected, atol=1e-6)


def test_a_model_that_cannot_be_exported_falls_back_to_torch(tmp_path, monkeypatch, caplog):
    import indexer.model.onnx_query as onnx_query

    def refuse(*args, **kwargs):
        raise RuntimeError("unsupported operator")

    monkeypatch.setattr(onnx_query, "export", refuse)
    enc = load_encoder(_settings(tmp_path, _tiny_st_model(tmp_path, layers=4), query_int8=False))
    assert enc.query_runtime == "torch" and enc.query_policy.parallelism == 1
    assert "unsupported operator" in caplog.text
    assert _cos_rows(enc.encode_queries(TEXTS), enc.encode_queries_reference(TEXTS)).min() > 0.9999
    assert _graphs(tmp_path) == []


def test_a_graph_that_disagrees_with_the_model_is_not_used(tmp_path, monkeypatch, caplog):
    import indexer.model.onnx_query as onnx_query

    monkeypatch.setitem(onnx_query.MIN_COSINE, "fp32", 1.5)  # no graph can reach a cosine above 1
    enc = load_encoder(_settings(tmp_path, _tiny_st_model(tmp_path), query_int8=False))
    assert enc.query_runtime == "torch"
    assert "disagrees" in caplog.text


def test_onnx_queries_from_many_threads_equal_one_at_a_time(tmp_path):
    from concurrent.futures import ThreadPoolExecutor

    enc = load_encoder(_settings(tmp_path, _tiny_st_model(tmp_path, layers=4), torch_threads=2))
    assert enc.query_policy.parallelism == 2
    alone = [enc.encode_queries([t]) for t in TEXTS * 8]
    with ThreadPoolExecutor(8) as pool:
        together = list(pool.map(lambda t: enc.encode_queries([t]), TEXTS * 8))
    for a, b in zip(alone, together, strict=True):
        np.testing.assert_allclose(a, b, atol=1e-6)


def test_unknown_query_runtime_names_the_allowed_ones(tmp_path):
    from indexer.encoder import PROFILES as P
    from indexer.encoder import build_encoder

    with pytest.raises(ConfigError, match="onnx, torch"):
        build_encoder(str(_tiny_st_model(tmp_path)), "tiny", P["plain"], query_runtime="tensorrt")


def test_a_prepared_model_serves_queries_without_loading_torch_or_the_model(tmp_path):
    s = _settings(tmp_path, _tiny_st_model(tmp_path, layers=4))
    first = load_encoder(s)  # exports the graph and writes its sidecar
    assert first.model_loaded
    assert len(list((tmp_path / "cache" / "onnx").glob("*.json"))) == 1
    second = load_encoder(s)
    assert second.query_runtime == "onnx" and not second.model_loaded
    assert second.dim == first.dim
    np.testing.assert_allclose(second.encode_queries(TEXTS), first.encode_queries(TEXTS), atol=1e-6)
    assert not second.model_loaded
    # documents need the model: it is loaded on first use, and gives the same vectors
    np.testing.assert_array_equal(second.encode_docs(TEXTS), first.encode_docs(TEXTS))
    assert second.model_loaded


def test_a_changed_prompt_or_a_broken_sidecar_loads_the_model(tmp_path):
    model = _tiny_st_model(tmp_path, layers=4)
    load_encoder(_settings(tmp_path, model))
    assert load_encoder(_settings(tmp_path, model, query_prompt="问：")).model_loaded  # the sidecar knows one prompt
    (sidecar,) = (tmp_path / "cache" / "onnx").glob("*.json")
    sidecar.write_text("{not json", "utf-8")
    again = load_encoder(_settings(tmp_path, model))
    assert again.model_loaded and again.query_runtime == "onnx"
    assert not load_encoder(_settings(tmp_path, model)).model_loaded  # the sidecar was written again


def test_a_changed_model_folder_is_exported_again(tmp_path):
    model = _tiny_st_model(tmp_path, layers=4)
    load_encoder(_settings(tmp_path, model))
    (before,) = _graphs(tmp_path)
    (model / "README.md").write_text("changed", "utf-8")  # any change to the folder changes its key
    enc = load_encoder(_settings(tmp_path, model))
    assert enc.model_loaded
    (after,) = _graphs(tmp_path)  # the new graph replaced the old one
    assert after != before


def test_quiet_stderr_holds_back_native_writes_and_replays_them_on_failure(capfd: pytest.CaptureFixture[str]) -> None:
    import os

    from indexer.model.builtin import quiet_stderr

    with quiet_stderr():
        os.write(2, b"I0000 builder.cc:183] Loading CharsMap\n")
    assert capfd.readouterr().err == ""
    with pytest.raises(RuntimeError), quiet_stderr():
        os.write(2, b"the reason it broke\n")
        raise RuntimeError("conversion failed")
    assert "the reason it broke" in capfd.readouterr().err
