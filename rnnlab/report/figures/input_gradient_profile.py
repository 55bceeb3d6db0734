"""Figure 15: the input-gradient profile ‖∂L/∂x_{T−k}‖ against distance k, at init and after
training."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from rnnlab.measure import names
from rnnlab.report import plotting as plot
from rnnlab.report.figures import figure
from rnnlab.report.load import Frames


def input_profile_frame(f: Frames) -> pd.DataFrame:
    """n^x_{T−k} / n^x_T against k at each run's first and last probe, with its params; zeros
    (underflow) and non-finite ratios dropped: the line ends there."""
    p = f.tables.get(names.TABLE_GRAD_X)
    if p is None or p.empty:
        return pd.DataFrame(columns=["run_id", "step", "t", "k", "n_t", "phase", "ratio"])
    p = p.reset_index(drop=True)
    first = p.groupby("run_id").step.transform("min")
    last = p.groupby("run_id").step.transform("max")
    p = p[(p.step == first) | (p.step == last)]
    p = p.assign(phase=np.where(p.step == first[p.index], "init", "end of training"))
    end = p[p.k == 0].set_index(["run_id", "step"]).n_t
    ref = end.reindex(pd.MultiIndex.from_frame(p[["run_id", "step"]])).to_numpy()
    with np.errstate(divide="ignore", invalid="ignore"):
        p = p.assign(ratio=p.n_t.to_numpy() / ref)
    p = p[np.isfinite(p.ratio) & (p.ratio > 0)]
    return plot.with_params(p, f)


@figure(
    15,
    "Input-gradient profile ‖∂L/∂x_{T−k}‖ relative to the last step against distance k, at "
    "initialisation and after training (grad_x.parquet; slope: grad_x/slope).",
)
def input_gradient_profile(f: Frames, out: Path) -> list[Path] | None:
    data = input_profile_frame(f)
    if data.empty:
        return None  # runs from before the input gradients were measured
    g = plot.against_distance(data, f, y="ratio")
    g.set(yscale="log")
    for ax in g.axes.flat:
        ax.axhline(1.0, color="0.3", lw=0.8, ls=":")
    plot.label_every_panel(g, "distance k = T − t", r"$n^x_{T-k} / n^x_T$")
    g.figure.suptitle(
        "Input-gradient profile (1/B) Σ_b ‖∂L_b/∂x_t‖ against distance (median over seeds, "
        "band: min–max)",
        y=1.03,
    )
    return plot.save(g, out, "15_input_gradient_profile")
