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
def slope_vs_swept(f: Frames, out: Path) -> list[Path]:
    data = slope_frame(f)
    x = f.col or f.hue or "name"
    hue = f.hue if f.hue != x else None
    kept = np.random.get_state()  # seaborn jitters from numpy's global generator: a fixed
    np.random.seed(0)  # draw, so a report drawn again from the same runs is the same picture
    try:
        g = sns.catplot(
            data=data,
            x=x,
            y="slope",
            order=plot.order(x, data[x]),
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
    g.figure.suptitle(
        "Gradient decay rate (< 0 vanishing, > 0 exploding), one point per seed", y=1.03
    )
    return plot.save(g, out, "6_slope_vs_swept")
