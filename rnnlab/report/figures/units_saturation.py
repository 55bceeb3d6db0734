"""Figure 14: saturated and dead units over training."""

from __future__ import annotations

from pathlib import Path

from rnnlab.measure import names
from rnnlab.report import plotting as plot
from rnnlab.report.figures import figure
from rnnlab.report.load import Frames

QUANTITIES = {
    names.UNITS_SATURATED: "saturated (|φ′| ≤ 0.01 γ)",
    names.UNITS_DEAD: "dead (saturated throughout)",
}


@figure(
    14,
    "Fraction of saturated unit-steps and of dead units along held-out inputs over training "
    "(units/saturated, units/dead).",
    elman_only=True,
)
def units_over_training(f: Frames, out: Path) -> list[Path] | None:
    h = f.history[f.history.key.isin(list(QUANTITIES))]
    if not plot.finite(h.value).any():
        return None  # runs from before units/* were measured, or nothing finite
    h = plot.with_params(h, f).assign(quantity=lambda d: d.key.map(QUANTITIES))
    facet, hue = f.col, f.hue
    g = plot.over_training(
        h,
        f,
        hue,
        facet,
        style="quantity",
        style_order=list(QUANTITIES.values()),
        **plot.colours(hue, h),
        linewidth=1.1,
        facet_kws={"sharey": True},
    )
    g.set(ylim=(-0.03, 1.03))
    plot.label_every_panel(g, "training step", "fraction")
    plot.titles(g, facet)
    g.figure.suptitle(
        "Saturated and dead units over training (median over seeds, band: min–max)", y=1.03
    )
    return plot.save(g, out, "14_units_over_training")
