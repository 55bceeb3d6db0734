"""Figure 15: the input-gradient profile ‖∂L/∂x_{T−k}‖ against distance k, at init and after
training."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from rnnlab.measure import names
from rnnlab.report import plotting as plot
from rnnlab.report.figures import figure
from rnnlab.report.load import Frames


def input_profile_frame(f: Frames) -> pd.DataFrame:
    """n^x_{T−k} / n^x_T against k at each run's first and last probe, with its params (zeros
    and non-finite ratios included: the figure counts them, ``plot.drawable_ratios``)."""
    p = f.tables.get(names.TABLE_GRAD_X)
    if p is None or p.empty:
        return pd.DataFrame(columns=["run_id", "step", "t", "k", "n_t", "phase", "ratio"])
    return plot.relative_profiles(p, f)


@figure(
    15,
    "Input-gradient profile ‖∂L/∂x_{T−k}‖ relative to the last step against distance k, at "
    "initialisation and after training (grad_x.parquet; slope: grad_x/slope).",
)
def input_gradient_profile(f: Frames, out: Path) -> list[Path] | None:
    data, left_out = plot.drawable_ratios(input_profile_frame(f))
    if data.empty:
        return None  # runs from before the input gradients were measured, or nothing finite
    g = plot.against_distance(data, f, y="ratio")
    plot.legend(g, left_out)
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
