"""The learning curve's tables and plot (eval/learning.py measures it; the eval report shows it)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

LEARNING_FILE = "learning.json"
PLOT = "learning_curve.png"


def _arrow(a: dict[str, Any], b: dict[str, Any], key: str) -> str:
    def f(v: float | None) -> str:
        return "–" if v is None else f"{v:.3f}"

    return f"{f(a[key])} → {f(b[key])}"


def learning_markdown(rows: list[dict[str, Any]]) -> list[str]:
    """The eval report's learning-curve tables, from ``Curve.to_json`` rows."""
    out: list[str] = []
    for c in rows:
        ref = c.get("reference")
        out += [
            f"**{c['suite']}**" + (f" (reference, the KB as shipped: test hit@1 {ref['hit1']:.3f})" if ref else ""),
            "",
        ]
        out += [
            "| dev replayed | shown to the operator | attached / out of scope / dismissed | confirmed | alternatives "
            "| shipped | test hit@1 | gap recovered | coverage | answered precision | out-of-scope handoff |",
            "|" + "---|" * 11,
        ]
        for r in c["rounds"]:
            t = r["test"]
            rec = f"{r['recovery']:.0%}" if r.get("recovery") is not None else "–"
            prec = f"{t['precision']:.3f}" if t["precision"] is not None else "–"
            oos = f"{t['oos_recall']:.3f}" if t["oos_recall"] is not None else "–"
            shipped = "yes" if r["shipped"] else "refused"
            out.append(
                f"| {r['share']:.0%} ({r['replayed']}) | {r['shown']} | {r['attached']} / {r['out_of_scope']} / "
                f"{r['dismissed']} | {r.get('confirmed', 0)} | {r['alternatives']} | {shipped} | {t['hit1']:.3f} "
                f"| {rec} | {t['coverage']:.3f} "
                f"| {prec} | {oos} |"
            )
        out.append("")
        refused = [r for r in c["rounds"] if r.get("refused")]
        if refused:  # what each refusal lost, so the table says why a round did not ship
            out += ["Refused: " + "; ".join(f"{r['share']:.0%}: {', '.join(r['refused'])}" for r in refused) + ".", ""]
        if c.get("tuned"):
            out += [
                "The encoder tuned on what was learned (`kefu learn tune`), test split, served build → tuned model:",
                "",
                "| after | examples | kept by its guard | test hit@1 | coverage | answered precision "
                "| out-of-scope handoff |",
                "|" + "---|" * 7,
            ]
            for t in c["tuned"]:
                a, b = t["served"], t["tuned"]
                out.append(
                    f"| {t['share']:.0%} | {t['examples']} | {'yes' if t['kept'] else 'no'} | {_arrow(a, b, 'hit1')} "
                    f"| {_arrow(a, b, 'coverage')} | {_arrow(a, b, 'precision')} | {_arrow(a, b, 'oos_recall')} |"
                )
            out.append("")
    return out


def plot(rows: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 5.2), dpi=110)
    for i, c in enumerate(rows):
        color = f"C{i}"  # one colour per KB in both panels
        x = [r["share"] * 100 for r in c["rounds"]]
        axes[0].plot(x, [r["test"]["hit1"] for r in c["rounds"]], marker="o", color=color, label=c["suite"])
        axes[1].plot(
            x, [r["test"]["coverage"] for r in c["rounds"]], marker="o", color=color, label=f"{c['suite']}: coverage"
        )
        prec = [r["test"]["precision"] for r in c["rounds"]]
        axes[1].plot(
            x,
            [p if p is not None else float("nan") for p in prec],
            marker="x",
            ls="--",
            color=color,
            label=f"{c['suite']}: precision",
        )
        if c.get("tuned"):
            axes[0].scatter(
                [t["share"] * 100 for t in c["tuned"]],
                [t["tuned"]["hit1"] for t in c["tuned"]],
                marker="*",
                s=160,
                color=color,
                edgecolors="black",
                linewidths=0.6,
                zorder=3,  # above the lines, which may pass through the same point
                label=f"{c['suite']}: encoder tuned (kefu learn tune)",
            )
        if c.get("reference"):
            axes[0].axhline(c["reference"]["hit1"], color=color, ls=":", lw=1, label=f"{c['suite']}: as shipped")
    axes[0].set_title("test hit@1 after each round")
    axes[1].set_title("test coverage and answered precision")
    for ax in axes:
        ax.set_xlabel("dev traffic learned from (%)")
        ax.grid(alpha=0.3)
        # below the plot: inside it the legend hid the points
        ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.14), ncol=1, frameon=False)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
