"""Mask personal data (phones, ID-card numbers, bank cards, emails) in tickets and logs."""

from __future__ import annotations

import re

_EMAIL = re.compile(r"[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}")
_ID_CARD = re.compile(r"(?<!\d)\d{6}(?:18|19|20)\d{2}(?:0[1-9]|1[0-2])\d{2}\d{3}[\dXx](?!\d)")
_BANK_CARD = re.compile(r"(?<!\d)(?:\d[ -]?){15,18}\d(?!\d)")
_PHONE = re.compile(r"(?<!\d)(?:\+?86[ -]?)?1[3-9]\d(?:[ -]?\d{4}){2}(?!\d)")


def mask_pii(text: str) -> str:
    """Replace personal data with fixed tags; order matters (ID cards before bank cards)."""
    text = _EMAIL.sub("[邮箱]", text)
    text = _ID_CARD.sub("[身份证号]", text)
    text = _PHONE.sub("[手机号]", text)
    return _BANK_CARD.sub("[银行卡号]", text)
