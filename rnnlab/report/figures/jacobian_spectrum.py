"""Figure 13: the singular values of the Jacobian product ∂h_T/∂h_{T−k} against distance k."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.ticker import LogLocator, NullFormatter, StrMethodFormatter

from rnnlab.measure import names
from rnnlab.report import plotting as plot
from rnnlab.report.figures import figure
from rnnlab.report.load import Frames

WHICH = {"log_sv_max": "ln σ_max", "log_sv_min": "ln σ_min"}


def jacobian_frame(f: Frames) -> pd.DataFrame:
    """One row per (run, phase, k, which): ln σ of J(k) at init and at the end of training,
    with the run's params. Unresolved ln σ_min (NaN) rows are dropped: the line ends there."""
    j = f.tables.get(names.TABLE_JACOBIAN)
    if j is None or j.empty:
        return pd.DataFrame(columns=["run_id", "step", "k", "phase", "which", "value"])
    j = j.reset_index(drop=True)
    first = j.groupby("run_id").step.transform("min")
    last = j.groupby("run_id").step.transform("max")
    j = j[(j.step == first) | (j.step == last)]
    j = j.assign(phase=np.where(j.step == first[j.index], "init", "end of training"))
    long = j.melt(
        id_vars=["run_id", "step", "k", "phase"],
        value_vars=list(WHICH),
        var_name="which",
        value_name="value",
    )
    long = long.assign(which=long.which.map(WHICH))
    long = long[np.isfinite(long.value)]
    return plot.with_params(long, f)


@figure(
    13,
    "Largest and smallest singular values of the Jacobian product ∂h_T/∂h_{T−k} against "
    "distance k, at initialisation and after training; the gap between them is the spread "
    "(log-condition number), the dotted line ln σ = 0 dynamical isometry.",
    elman_only=True,
)
def jacobian_spectrum(f: Frames, out: Path) -> list[Path] | None:
    data = jacobian_frame(f)
    if data.empty:
        return None  # runs from before the Jacobian spectrum was measured
    g = plot.against_distance(
        data, f, style="which", style_order=list(WHICH.values()), marker="o", markersize=3
    )
    g.set(xscale="log")
    for ax in g.axes.flat:
        ax.axhline(0.0, color="0.3", lw=0.8, ls=":")
        # distances as plain numbers: 1, 2, 5, 10, 20, … up to a few hundred steps (below a
        # decade the default labelled every minor tick 2×10⁰, 3×10⁰, … and they overlapped),
        # 1, 10, 100, 1000 beyond (three labels a decade collide on a panel this narrow)
        subs = (1, 2, 5) if ax.get_xlim()[1] <= 300 else (1,)
        ax.xaxis.set_major_locator(LogLocator(subs=subs))
        ax.xaxis.set_major_formatter(StrMethodFormatter("{x:g}"))
        ax.xaxis.set_minor_formatter(NullFormatter())
    plot.label_every_panel(g, "distance k (steps back from T)", r"$\ln \sigma$ of $J(k)$")
    g.figure.suptitle(
        "Singular values of ∂h_T/∂h_{T−k} along held-out inputs (mean over trajectories, "
        "median over seeds)\ndotted: isometry ln σ = 0; ln σ_min ends where float64 cannot "
        "resolve it",
        y=1.05,
    )
    return plot.save(g, out, "13_jacobian_spectrum")
