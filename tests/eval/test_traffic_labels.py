"""The real-traffic labels: keyed by session and turn, no message text, ids that exist."""

from __future__ import annotations

import json

from eval.dataset import DATA_DIR
from kb.loader import load_kb
from kb.settings import BUNDLED_KB

KEYS = {"session", "turn", "split", "scope", "expect", "reason", "relevant", "elliptical", "suggest"}
REASONS = {None, "needs_order", "low_confidence", "user_requested", "sensitive", "greeting"}


def test_traffic_labels_are_keys_and_judgements_only():
    rows = [json.loads(line) for line in (DATA_DIR / "traffic_labels.jsonl").read_text("utf-8").splitlines() if line]
    assert len(rows) >= 400
    ids = {e.id for e in load_kb(BUNDLED_KB).entries}
    seen = set()
    for r in rows:
        assert set(r) <= KEYS and isinstance(r["session"], str) and 8 <= len(r["session"]) <= 64
        assert (r["session"], r["turn"]) not in seen
        seen.add((r["session"], r["turn"]))
        assert r["split"] in ("dev", "test") and r["scope"] in ("in", "order", "out")
        assert r["expect"] in ("answer", "clarify", "handoff") and r["reason"] in REASONS
        assert (r["scope"] == "in") == bool(r["relevant"]) and set(r["relevant"]) <= ids
        assert set(r.get("suggest", ())) <= ids
    # a session is wholly in one split: its turns read each other
    split_of: dict[str, str] = {}
    for r in rows:
        assert split_of.setdefault(r["session"], r["split"]) == r["split"]
