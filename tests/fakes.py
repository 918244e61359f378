"""Test doubles shared by several test modules."""

from service.policy import Calibration

# Thresholds for the deterministic fake encoder on the tiny KB (its scores are not the real
# model's): an exact question or alternative scores 0.44–0.62, unrelated text lower.
FAKE_CAL = Calibration(answer_at=0.42, clarify_at=0.25, source="fake-encoder-test")
