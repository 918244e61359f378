"""The regression guard of ``kefu learn``: one set's figures per build, and the losses between two."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from eval.dataset import EvalItem
from eval.runner import ItemResult
from kb.errors import ConfigError

DEFAULT_TOLERANCE = 0.02


@dataclass(frozen=True)
class Checks:
    """What a candidate build is calibrated for and checked on, and how strictly: ``kefu learn``
    and ``kefu learn tune`` ship (or keep) only what loses no more than ``tolerance`` on the learned
    and the labelled test examples, unless ``force``."""

    tolerance: float = DEFAULT_TOLERANCE
    force: bool = False
    precision: float = 0.95  # the recalibration's answered-precision target
    oos_recall: float = 0.95  # and its out-of-scope handoff-recall target
    labelled_dev: Sequence[EvalItem] = ()  # a user's labelled set, beside the learned examples
    labelled_test: Sequence[EvalItem] = ()

    def __post_init__(self) -> None:
        if not 0.0 <= self.tolerance <= 1.0:
            raise ConfigError(f"tolerance={self.tolerance} must be within [0, 1]")


@dataclass(frozen=True)
class Figures:
    """One set evaluated by one build."""

    n_in: int
    n_out: int
    hit1: float
    precision: float | None  # answered precision; None when nothing was answered
    coverage: float | None  # None: a check asked without the build's thresholds
    oos_recall: float | None  # out-of-scope handoff recall; None without out-of-scope items

    @classmethod
    def of(cls, results: Sequence[ItemResult]) -> Figures:
        ins = [r for r in results if r.item.in_scope]
        oos = [r for r in results if r.item.reason == "low_confidence"]
        answered = [r for r in results if r.decision == "answer"]
        right = sum(r.item.in_scope and r.top1_correct for r in answered)
        return cls(
            n_in=len(ins),
            n_out=len(oos),
            hit1=round(sum(r.top1_correct for r in ins) / len(ins), 4) if ins else 0.0,
            precision=round(right / len(answered), 4) if answered else None,
            coverage=round(sum(r.decision == "answer" for r in ins) / len(ins), 4) if ins else 0.0,
            oos_recall=round(sum(r.decision == "handoff" for r in oos) / len(oos), 4) if oos else None,
        )

    @classmethod
    def hit_only(cls, results: Sequence[ItemResult]) -> Figures:
        """hit@1 of the in-scope ``results`` alone: for a check whose decisions are not the build's
        (asked without its calibration's thresholds)."""
        return dataclasses.replace(cls.of(results), n_out=0, precision=None, coverage=None, oos_recall=None)

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class Comparison:
    name: str
    before: Figures | None  # None: no build was served
    after: Figures

    def losses(self, tolerance: float) -> list[str]:
        """Guarded figures that fell by more than ``tolerance``: hit@1, precision, OOS recall."""
        b, a = self.before, self.after
        if b is None:
            return []
        out = []
        pairs = (
            ("hit@1", b.hit1 if b.n_in else None, a.hit1 if a.n_in else None),
            ("answered precision", b.precision, a.precision),
            ("out-of-scope handoff recall", b.oos_recall, a.oos_recall),
        )
        for label, was, now in pairs:
            if was is not None and now is not None and was - now > tolerance:
                out.append(f"{self.name}: {label} {was:.3f} → {now:.3f}")
        return out

    def to_json(self) -> dict[str, Any]:
        return {
            "set": self.name,
            "before": self.before.to_json() if self.before else None,
            "after": self.after.to_json(),
        }
