"""The decision policy: calibration validation, thresholds, confidence, the logistic fit, bigrams."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

from indexer.lexical import char_bigrams
from kb.errors import ConfigError
from service.policy import (
    DEFAULT_ANSWER_AT,
    DEFAULT_CLARIFY_AT,
    FEATURES,
    Calibration,
    Features,
    bigram_overlap,
    decide,
    fit_logistic,
)


def _features(top1: float = 0.5, **kw: float) -> Features:
    base = dict.fromkeys(FEATURES, 0.0)
    base.update(top1=top1, **kw)
    return Features(**base)


# --- Calibration validation ---------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("answer_at", "clarify_at"),
    [(0.5, 0.6), (1.2, 0.5), (0.5, -0.1)],
)
def test_thresholds_out_of_order_or_range_are_config_errors(answer_at: float, clarify_at: float):
    with pytest.raises(ConfigError, match="clarify_at"):
        Calibration(answer_at=answer_at, clarify_at=clarify_at)


def test_equal_thresholds_are_allowed():
    cal = Calibration(answer_at=0.7, clarify_at=0.7)
    assert decide(0.7, cal) == "answer"
    assert decide(0.6999, cal) == "handoff"


@pytest.mark.parametrize("n", [0, 1, len(FEATURES) - 1, len(FEATURES) + 1])
def test_wrong_weight_count_is_a_config_error(n: int):
    with pytest.raises(ConfigError, match=f"{n} weights"):
        Calibration(weights=[0.1] * n, mean=[0.0] * len(FEATURES), scale=[1.0] * len(FEATURES))


def test_defaults_and_json_round_trip():
    cal = Calibration()
    assert (cal.answer_at, cal.clarify_at, cal.source) == (DEFAULT_ANSWER_AT, DEFAULT_CLARIFY_AT, "default")
    assert Calibration.from_json(None) == cal
    assert Calibration.from_json({}) == cal
    fitted = Calibration(
        answer_at=0.8,
        clarify_at=0.4,
        weights=[1.0] * len(FEATURES),
        bias=-0.5,
        mean=[0.0] * len(FEATURES),
        scale=[1.0] * len(FEATURES),
        source="dev-logistic",
    )
    data = {**fitted.to_json(), "inherited_from": "20260101-000000-deadbeef"}  # unknown keys are ignored
    assert Calibration.from_json(data) == fitted


# --- decide ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("confidence", "expected"),
    [
        (1.0, "answer"),
        (0.9, "answer"),  # at answer_at: answer
        (0.8999, "clarify"),
        (0.865, "clarify"),  # at clarify_at: clarify
        (0.8649, "handoff"),
        (0.0, "handoff"),
    ],
)
def test_decide_boundaries_with_defaults(confidence: float, expected: str):
    assert decide(confidence, Calibration()) == expected


# --- confidence --------------------------------------------------------------------------------------------
def test_uncalibrated_confidence_is_raw_top1():
    cal = Calibration()
    f = _features(0.7321, question_top1=0.99, margin=0.5, votes=1.0)
    assert cal.confidence(f) == pytest.approx(0.7321)


def test_weights_without_mean_or_scale_are_a_config_error():
    with pytest.raises(ConfigError, match="mean and scale"):
        Calibration(weights=[1.0] * len(FEATURES))


def _one_weight(name: str, w: float, bias: float = 0.0) -> Calibration:
    weights = [w if f == name else 0.0 for f in FEATURES]
    return Calibration(
        answer_at=0.5, clarify_at=0.5, weights=weights, bias=bias, mean=[0.5] * len(FEATURES), scale=[0.1] * 7
    )


def test_logistic_confidence_value():
    cal = _one_weight("top1", 2.0, bias=0.3)
    # z = (0.7 - 0.5) / 0.1 = 2 → logit = 2*2 + 0.3
    assert cal.confidence(_features(0.7)) == pytest.approx(1 / (1 + math.exp(-4.3)))


def test_logistic_confidence_is_monotone_in_the_weighted_feature():
    up = _one_weight("margin", 1.5)
    down = _one_weight("margin", -1.5)
    xs = np.linspace(-1.0, 2.0, 31)
    c_up = [up.confidence(_features(0.5, margin=float(x))) for x in xs]
    c_down = [down.confidence(_features(0.5, margin=float(x))) for x in xs]
    assert all(b > a for a, b in itertools.pairwise(c_up))
    assert all(b < a for a, b in itertools.pairwise(c_down))
    assert all(0.0 <= c <= 1.0 for c in c_up + c_down)
    # a feature with zero weight does not move it
    assert up.confidence(_features(0.1, margin=0.3)) == pytest.approx(up.confidence(_features(0.9, margin=0.3)))


def test_logistic_confidence_saturates_without_overflow():
    cal = _one_weight("top1", 1000.0)
    assert cal.confidence(_features(100.0)) == pytest.approx(1.0)
    assert cal.confidence(_features(-100.0)) == pytest.approx(0.0, abs=1e-20)


# --- fit_logistic --------------------------------------------------------------------------------------------
def _separable(n: int = 200, seed: int = 7) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, len(FEATURES)))
    y = (x[:, 0] + 0.5 * x[:, 2] > 0).astype(np.float64)
    x[:, 0] += np.where(y == 1, 0.5, -0.5)  # a margin between the classes
    x[:, 5] = 3.0  # a constant column: scale must not divide by zero
    return x, y


def test_fit_logistic_separates_training_data():
    x, y = _separable()
    w, b, mean, scale = fit_logistic(x, y)
    assert w.shape == (len(FEATURES),) and mean.shape == (len(FEATURES),) and scale.shape == (len(FEATURES),)
    assert np.all(np.isfinite(w)) and math.isfinite(b)
    assert scale[5] == 1.0  # constant column
    p = 1 / (1 + np.exp(-(((x - mean) / scale) @ w + b)))
    assert ((p >= 0.5) == (y == 1)).mean() > 0.9
    assert w[0] > 0 and w[2] > 0  # the informative features get positive weight


def test_fit_logistic_is_deterministic():
    x, y = _separable()
    a = fit_logistic(x, y)
    b = fit_logistic(x.copy(), y.copy())
    for u, v in zip(a, b, strict=True):
        np.testing.assert_array_equal(u, v)


def test_fitted_model_plugs_into_calibration():
    x, y = _separable()
    w, b, mean, scale = fit_logistic(x, y)
    cal = Calibration(answer_at=0.5, clarify_at=0.5, weights=list(w), bias=b, mean=list(mean), scale=list(scale))
    preds = [cal.confidence(Features(*row)) >= 0.5 for row in x]
    assert np.mean(np.array(preds) == (y == 1)) > 0.9


@pytest.mark.parametrize(
    ("x", "y"),
    [
        (np.zeros((1, 7)), np.zeros(1)),  # one row
        (np.zeros(7), np.zeros(7)),  # 1-D
        (np.zeros((5, 7)), np.zeros(4)),  # label count mismatch
    ],
)
def test_fit_logistic_rejects_bad_shapes(x, y):
    with pytest.raises(ConfigError):
        fit_logistic(x, y)


# --- bigrams ----------------------------------------------------------------------------------------------------
def test_char_bigrams():
    assert char_bigrams("退款多久") == {"退款", "款多", "多久"}
    assert char_bigrams("退，款") == {"退款"}  # punctuation ignored
    assert char_bigrams("好") == {"好"}
    assert char_bigrams("？！") == set()


@pytest.mark.parametrize(
    ("a", "b", "expected"),
    [
        ("退款", "退款", 1.0),
        ("退款多久", "退款到账", 1 / 5),  # {退款} / {退款,款多,多久,款到,到账}
        ("退款多久到账", "退款到账", 2 / 6),  # {退款,到账} / 6 distinct
        ("七天无理由", "七天无理由退货", 4 / 6),
        ("abc", "xyz", 0.0),
        ("", "退款", 0.0),
        ("！！", "？？", 0.0),
    ],
)
def test_bigram_overlap_hand_computed(a: str, b: str, expected: float):
    assert bigram_overlap(a, b) == pytest.approx(expected)
    assert bigram_overlap(b, a) == pytest.approx(expected)


# --- a calibration with the ranker's probability -------------------------------------------------
RANKER_JSON = {"features": ["dense"], "weights": [1.0], "mean": [0.0], "scale": [1.0]}


def test_named_features_choose_what_the_weights_read():
    names = [*FEATURES, "rank_prob"]
    n = len(names)
    cal = Calibration(
        weights=[0.0] * (n - 1) + [2.0], mean=[0.0] * n, scale=[1.0] * n, features=names, ranker=RANKER_JSON
    )
    assert cal.names == tuple(names)
    # only rank_prob carries weight: logit = 2·0.75 = 1.5
    assert cal.confidence(_features(top1=0.1, rank_prob=0.75)) == pytest.approx(1 / (1 + math.exp(-1.5)))
    assert Calibration.from_json(cal.to_json()) == cal


def test_rank_prob_without_a_ranker_is_a_config_error():
    names = [*FEATURES, "rank_prob"]
    n = len(names)
    with pytest.raises(ConfigError, match="carries no ranker"):
        Calibration(weights=[0.1] * n, mean=[0.0] * n, scale=[1.0] * n, features=names)


def test_unknown_feature_name_is_a_config_error():
    with pytest.raises(ConfigError, match=r"unknown features \['cosine'\]"):
        Calibration(weights=[0.1], mean=[0.0], scale=[1.0], features=["cosine"])


# --- the scope model ----------------------------------------------------------------------------
def _scoped(scope_at: float = 0.5) -> Calibration:
    n = len(FEATURES)
    # confidence reads top1 only; scope reads length only (logit = 4·length)
    weights = [4.0] + [0.0] * (n - 1)
    scope_weights = [0.0] * (n - 1) + [4.0]
    return Calibration(
        answer_at=0.9,
        clarify_at=0.5,
        weights=weights,
        mean=[0.0] * n,
        scale=[1.0] * n,
        scope_weights=scope_weights,
        scope_bias=0.0,
        scope_at=scope_at,
    )


def test_scope_decides_between_clarify_and_handoff_below_the_answer_threshold():
    cal = _scoped(0.7)
    f_in = _features(top1=0.0, length=1.0)  # scope 1/(1+e^-4) ≈ 0.982
    f_out = _features(top1=0.0, length=-1.0)  # scope ≈ 0.018
    assert cal.scope(f_in) == pytest.approx(1 / (1 + math.exp(-4)))
    assert decide(cal.confidence(f_in), cal, cal.scope(f_in)) == "clarify"
    assert decide(cal.confidence(f_out), cal, cal.scope(f_out)) == "handoff"
    confident = _features(top1=1.0, length=-1.0)  # confidence ≈ 0.982 ≥ 0.9: answered whatever the scope
    assert decide(cal.confidence(confident), cal, cal.scope(confident)) == "answer"


def test_without_a_scope_model_clarify_at_decides():
    cal = Calibration(answer_at=0.9, clarify_at=0.5)
    assert cal.scope(_features()) is None
    assert decide(0.6, cal, None) == "clarify" and decide(0.4, cal, None) == "handoff"


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"scope_weights": [1.0]}, "one weight per feature"),
        ({"scope_at": None}, "scope_at within"),
        ({"scope_at": 1.5}, "scope_at within"),
        ({"scope_bias": math.inf}, "finite"),
    ],
)
def test_scope_model_validation(kwargs, message):
    base = _scoped().to_json()
    with pytest.raises(ConfigError, match=message):
        Calibration.from_json({**base, **kwargs})


def test_scope_model_json_round_trip():
    cal = _scoped(0.3)
    assert Calibration.from_json(cal.to_json()) == cal
