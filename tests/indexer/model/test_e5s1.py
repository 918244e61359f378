import struct

import numpy as np
import pytest

from indexer.model.e5s1 import E5S1File, dequantize_q4_0
from kb.errors import ModelError


def _block(scale: float, nibbles: list[int]) -> bytes:
    assert len(nibbles) == 32
    qs = bytes((nibbles[j] & 0xF) | ((nibbles[j + 16] & 0xF) << 4) for j in range(16))
    return np.float16(scale).tobytes() + qs


def test_dequantize_q4_0_hand_computed():
    # weight j sits in the low nibble of byte j, weight j+16 in the high nibble: value = (n-8)*d
    nib = list(range(16)) + [15 - i for i in range(16)]
    out = dequantize_q4_0(_block(0.5, nib), 32)
    expected = np.array([(n - 8) * 0.5 for n in nib], dtype=np.float32)
    np.testing.assert_array_equal(out, expected)


def test_dequantize_two_blocks_keep_their_own_scale():
    raw = _block(1.0, [9] * 32) + _block(-2.0, [0] * 32)
    out = dequantize_q4_0(raw, 64)
    assert out[:32].tolist() == [1.0] * 32
    assert out[32:].tolist() == [16.0] * 32


def test_bad_magic_is_refused(tmp_path):
    p = tmp_path / "x.bin"
    p.write_bytes(b"NOPE" + b"\0" * 100)
    with pytest.raises(ModelError, match="not an E5S1 file"):
        E5S1File(p)


def test_truncated_file_is_refused(tmp_path):
    p = tmp_path / "x.bin"
    p.write_bytes(b"E5S1" + struct.pack("<I7ifi", 1, 384, 12, 12, 1536, 250037, 512, 2, 1e-12, 32))
    with pytest.raises(ModelError, match="truncated or corrupt"):
        E5S1File(p)
