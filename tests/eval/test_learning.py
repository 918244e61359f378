"""eval/learning.py: the learning curve's report tables, the tuned rounds included."""

from __future__ import annotations

from eval.learn_guard import Figures
from eval.learning import Curve, Round, TunedRound
from eval.learning_report import learning_markdown


def _figures(hit1: float, precision: float | None) -> Figures:
    return Figures(n_in=10, n_out=4, hit1=hit1, precision=precision, coverage=0.5, oos_recall=0.75)


def test_the_report_shows_the_rounds_and_the_tuned_model_next_to_the_served_build():
    r0 = Round(0.0, 0, 0, 0, 0, 0, 0, 0, True, (), "self", _figures(0.6, 0.9), 1.0)
    r1 = Round(0.5, 20, 12, 8, 2, 2, 3, 8, True, (), "labelled", _figures(0.7, None), 1.0)
    tuned = TunedRound(0.5, 11, False, _figures(0.7, None), _figures(0.8, 0.95), 9.0)
    curve = Curve("kb", (r0, r1), _figures(0.9, 0.95), (tuned,)).to_json()
    assert curve["rounds"][1]["recovery"] == 0.3333  # (0.7 - 0.6) / (0.9 - 0.6)
    lines = learning_markdown([curve])
    assert "| 50% (20) | 12 | 8 / 2 / 2 | 3 | 8 | yes | 0.700 | 33% | 0.500 | – | 0.750 |" in lines
    assert "| 50% | 11 | no | 0.700 → 0.800 | 0.500 → 0.500 | – → 0.950 | 0.750 → 0.750 |" in lines


def test_a_curve_without_tuned_rounds_has_no_tuned_table():
    r0 = Round(0.0, 0, 0, 0, 0, 0, 0, 0, True, (), "self", _figures(0.6, 0.9), 1.0)
    lines = learning_markdown([Curve("kb", (r0,), None).to_json()])
    assert not any("tuned" in line for line in lines)


def test_a_refused_round_says_what_it_lost():
    r0 = Round(0.0, 0, 0, 0, 0, 0, 0, 0, True, (), "self", _figures(0.6, 0.9), 1.0)
    loss = "learned dev, held out from the new rows: hit@1 0.636 → 0.576"
    r1 = Round(0.25, 10, 5, 4, 1, 0, 2, 0, False, (loss,), "self", _figures(0.6, 0.9), 1.0)
    lines = learning_markdown([Curve("kb", (r0, r1), None).to_json()])
    assert f"Refused: 25%: {loss}." in lines
    assert not any(line.startswith("Refused") for line in learning_markdown([Curve("kb", (r0,), None).to_json()]))
