"""Text files as their authors saved them: UTF-8, or the legacy encodings Chinese Windows and Excel
write as "ANSI" text, which a shop's CSV export often is: GBK (GB18030) and, for Traditional
Chinese, Big5."""

from __future__ import annotations

GBK = "gb18030"  # a superset of GBK and GB2312: every GBK file decodes the same with it
# Decoded GBK text is Chinese: nearly all of its non-ASCII characters are hanzi or CJK and full-width
# punctuation. Bytes of another encoding that happen to decode as GB18030 rarely look like that.
CHINESE_SHARE = 0.9


class EncodingError(ValueError):
    """The bytes are neither UTF-8 nor Chinese text in GBK or Big5."""


def decode_text(data: bytes) -> tuple[str, str]:
    """(text, encoding): UTF-8 (with or without a byte order mark); else GBK, then Big5, whichever
    decodes into Chinese (``looks_chinese``). The two are told apart by that: Big5's most common
    characters (的一是不我) are kana, Greek and box-drawing rows in GBK, so Big5 text read as GBK
    does not look Chinese. EncodingError says where UTF-8 failed."""
    try:
        return data.decode("utf-8-sig"), "utf-8"
    except UnicodeDecodeError as exc:
        bad = exc.start
    for encoding in (GBK, "big5"):
        text = _decoded(data, encoding)
        if text is not None and looks_chinese(text):
            return text, encoding
    line = data[:bad].count(b"\n") + 1
    raise EncodingError(f"not UTF-8 text (byte 0x{data[bad]:02x} on line {line}), nor GBK or Big5; save it as UTF-8")


def encoding_note(encoding: str) -> str:
    """What a load says of a file it read as ``encoding`` (not UTF-8)."""
    name = "GBK" if encoding == GBK else encoding.upper()
    return f"read as {name} text, not UTF-8; save it as UTF-8 to be sure every character is read as meant"


def looks_chinese(text: str) -> bool:
    """Whether at least CHINESE_SHARE of the non-ASCII characters of ``text`` are CJK."""
    wide = [c for c in text if ord(c) > 0x7F]
    if not wide:
        return False
    cjk = sum(1 for c in wide if "\u4e00" <= c <= "\u9fff" or "\u3000" <= c <= "\u303f" or "\uff00" <= c <= "\uffef")
    return cjk >= CHINESE_SHARE * len(wide)


def _decoded(data: bytes, encoding: str) -> str | None:
    try:
        return data.decode(encoding)
    except UnicodeDecodeError:
        return None
