"""Test doubles shared by several test modules."""

from service.policy import RANKER_FEATURES, Calibration

# Thresholds for the deterministic fake encoder on the tiny KB (its scores are not the real
# model's): an exact question or alternative scores 0.44–0.62, unrelated text lower.
FAKE_CAL = Calibration(answer_at=0.42, clarify_at=0.25, source="fake-encoder-test")


def ranked_calibration(ranker_json: dict, answer_at: float = 0.8, clarify_at: float = 0.5) -> Calibration:
    """A calibration whose confidence model reads the learned ranker's probability (all weights 1)."""
    names = [*RANKER_FEATURES]
    n = len(names)
    return Calibration(
        answer_at=answer_at,
        clarify_at=clarify_at,
        weights=[1.0] * n,
        mean=[0.0] * n,
        scale=[1.0] * n,
        features=names,
        ranker=ranker_json,
    )
