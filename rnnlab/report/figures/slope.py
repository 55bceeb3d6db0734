"""Figure 6: the measured decay rate of the gradient profile, one point per seed."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import seaborn as sns

from rnnlab.report import plotting as plot
from rnnlab.report.figures import figure
from rnnlab.report.load import Frames


def slope_frame(f: Frames) -> pd.DataFrame:
    runs = f.drawn.melt(
        id_vars=[c for c in f.drawn.columns if c not in ("slope_init", "slope_final")],
        value_vars=["slope_init", "slope_final"],
        var_name="phase",
        value_name="slope",
    )
    return runs.assign(
        phase=runs.phase.map({"slope_init": "init", "slope_final": "end of training"})
    )


@figure(6, "Measured decay rate of the gradient profile, one point per seed.")
def slope_vs_swept(f: Frames, out: Path) -> list[Path] | None:
    data = slope_frame(f)
    x = f.col or f.hue or "name"
    x_order = plot.order(x, data[x])  # every x, a point or not
    shown = plot.finite(data.slope)  # NaN: no profile to fit (it overflowed, or no probe)
    if not shown.any():
        return None
    left_out, data = int((~shown).sum()), data[shown]
    hue = f.hue if f.hue != x else None
    kept = np.random.get_state()  # seaborn jitters from numpy's global generator: a fixed
    np.random.seed(0)  # draw, so a report drawn again from the same runs is the same picture
    try:
        g = sns.catplot(
            data=data,
            x=x,
            y="slope",
            order=x_order,
            hue=hue,
            hue_order=plot.order(hue, data[hue]) if hue else None,
            col="phase",
            col_order=["init", "end of training"],
            kind="strip",
            dodge=True,
            palette=plot.palette(hue, data),
            height=plot.WIDTH * 0.8,
            aspect=1.1,
            size=4,
            jitter=0.15,
        )
    finally:
        np.random.set_state(kept)
    for ax in g.axes.flat:
        ax.axhline(0, color="0.3", lw=0.8, ls="--")
    plot.label_every_panel(g, plot.label(x), r"slope of $\ln n_t$ vs $k$ (nats/step)")
    g.set_titles("{col_name}")
    title = "Gradient decay rate (< 0 vanishing, > 0 exploding), one point per seed"
    if left_out:
        title += f"\n{left_out} of {len(shown)} slopes not finite (inf or NaN): not drawn"
    g.figure.suptitle(title, y=1.03 + 0.04 * bool(left_out))
    return plot.save(g, out, "6_slope_vs_swept")
