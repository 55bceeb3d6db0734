"""Figure 12: the measured pre-activation variance q̂ over training beside the mean-field q*."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
from matplotlib.lines import Line2D

from rnnlab.measure import names
from rnnlab.report import plotting as plot
from rnnlab.report.figures import figure
from rnnlab.report.load import Frames


def q_frame(f: Frames) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(q̂ per run and probe step, q* per run at step 0), each with the run's params."""
    h = f.history
    q_hat = plot.with_params(h[h.key == names.UNITS_Q_HAT], f)
    q_star = plot.with_params(h[(h.key == names.THEORY_Q_STAR) & (h.step == 0)], f)
    return q_hat, q_star


@figure(
    12,
    "Measured pre-activation variance q̂ (units/q_hat) over training; dashed: the mean-field "
    "fixed point q* at initialisation. Where they part, the mean-field assumptions no longer hold.",
    elman_only=True,
)
def q_hat_vs_q_star(f: Frames, out: Path) -> list[Path] | None:
    q_hat, q_star = q_frame(f)
    if not plot.finite(q_hat.value).any():
        return None  # runs from before units/* were measured, or q̂ overflowed in every run
    facet, hue = f.col, f.hue
    g = plot.over_training(q_hat, f, hue, facet, **plot.colours(hue, q_hat), linewidth=1.2)
    g.set(yscale="log")
    pal = plot.palette(hue, q_hat) or {}
    finite = q_star[plot.finite(q_star.value) & (q_star.value > 0)]  # a line on a log axis
    for key, ax in plot.facet_axes(g, facet):
        d = finite if key is None else finite[finite[facet] == key]
        groups = d.groupby(hue) if hue else [(None, d)]
        for value, rows in groups:
            if len(rows):  # the median over seeds of q* at step 0
                ax.axhline(rows.value.median(), color=pal.get(value, "0.3"), lw=0.9, ls="--")
    extra = {}
    if len(finite):
        extra["q* (mean field, step 0)"] = Line2D([], [], color="0.3", lw=0.9, ls="--")
    if n := q_star.run_id.nunique() - finite.run_id.nunique():
        text = f"q* inf, NaN or 0 in {plot.n_runs(n)}: no dashed line"
        extra[text] = plot.note(text)
    plot.legend(g, extra)
    plot.label_every_panel(g, "training step", r"$\hat q$ = mean $z^2$ (after burn-in)")
    plot.titles(g, facet)
    g.figure.suptitle(
        "Pre-activation variance: measured q̂ (median over seeds, band: min–max) "
        "vs mean-field q* (dashed)",
        y=1.03,
    )
    return plot.save(g, out, "12_q_hat_vs_q_star")
