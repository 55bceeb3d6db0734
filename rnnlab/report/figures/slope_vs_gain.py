"""Figure 8: measured slope at init against gain, beside mean-field theory and λ_max."""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from rnnlab.measure import names
from rnnlab.report import plotting as plot
from rnnlab.report.figures import figure
from rnnlab.report.load import Frames


def criticality_frame(f: Frames) -> pd.DataFrame:
    """Per run at init: gain, measured slope, mean-field slope, λ_max (long: one row per
    quantity), as logged: NaN, ±inf and SQLite's ±1.8e308 kept (the figure marks them)."""
    h = f.history[f.history.step == 0].pivot_table(
        index="run_id", columns="key", values="value", aggfunc="first", dropna=False
    )  # dropna=False: a quantity NaN in every run (a slope where n overflowed) is a column
    need = [names.SLOPE, names.THEORY_SLOPE, names.LYAPUNOV_MAX]
    if "model.gain" not in f.runs.columns or not set(need) <= set(h.columns):
        return pd.DataFrame(
            columns=["run_id", "model.gain", "model.activation", "quantity", "slope"]
        )
    wide = f.drawn[["run_id", "model.gain", "model.activation"]].merge(h.reset_index(), on="run_id")
    quantities = {
        names.SLOPE: "measured slope",
        names.THEORY_SLOPE: "mean field ½ ln χ₁",
        names.LYAPUNOV_MAX: "λ_max (QR)",
    }
    long = wide.melt(
        id_vars=[
            "run_id",
            "model.gain",
            "model.activation",
            names.THEORY_Q_IN,
            names.THEORY_BIAS_VAR,
        ],
        value_vars=list(quantities),
        var_name="quantity",
        value_name="slope",
    )
    return long.assign(quantity=long.quantity.map(quantities))


@figure(
    8,
    "Measured slope at init against gain beside the mean-field "
    "prediction ½ ln χ₁ and the largest Lyapunov exponent; red: the edge of chaos (χ₁ = 1).",
    elman_only=True,
)
def slope_vs_gain_with_theory(f: Frames, out: Path) -> list[Path] | None:
    """Measured slope at init against gain, the mean-field curve, λ_max, the critical gain."""
    from rnnlab.measure import theory

    data = criticality_frame(f)
    if data.empty or data["model.gain"].nunique() < 2:
        return None  # needs a sweep over model.gain
    acts = plot.order("model.activation", data["model.activation"])
    fig, axes = plt.subplots(
        1,
        len(acts),
        figsize=(plot.WIDTH * 1.1 * len(acts), plot.WIDTH * 0.9),
        squeeze=False,
        layout="constrained",
    )
    for ax, act in zip(axes[0], acts, strict=True):
        d = data[data["model.activation"] == act]
        extra = []  # legend entries for what is off the scale or not drawn
        for quantity, style in (
            ("measured slope", {"s": 14, "color": plot.PALETTE.get(act)}),
            ("λ_max (QR)", {"s": 18, "marker": "x", "color": "0.25"}),
        ):
            q = d[d.quantity == quantity]
            ok = plot.finite(q.slope)
            if ok.any():
                ax.scatter(q["model.gain"][ok], q.slope[ok], label=quantity, zorder=3, **style)
            what = quantity.split(" (")[0]
            extra += plot.mark_off_scale(ax, q["model.gain"], q.slope, what, color=style["color"])
        q_in, b = float(d[names.THEORY_Q_IN].median()), float(d[names.THEORY_BIAS_VAR].median())
        gains = np.geomspace(d["model.gain"].min() * 0.9, d["model.gain"].max() * 1.1, 200)
        curve = np.array([theory.mean_field(act, g, q_in, b).slope for g in gains])
        curve = np.where(plot.finite(curve), curve, np.nan)  # ±inf (gain 0) has no place
        ax.plot(gains, curve, color="black", lw=1.2, label="mean field ½ ln χ₁")
        crit = theory.critical_gain(act, q_in, b)
        if np.isfinite(crit):
            ax.axvline(crit, color="red", lw=0.8, ls="--")
            ax.annotate(
                f"edge g = {crit:.3g}",
                (crit, 0.02),
                xycoords=("data", "axes fraction"),
                color="red",
                fontsize=7,
                rotation=90,
                ha="right",
                va="bottom",
            )
        ax.axhline(0, color="0.5", lw=0.6)
        ax.set_xlabel("gain g (σ_w)")
        ax.set_ylabel("nats per step")
        ax.set_title(act, fontsize=9)
        handles, _ = ax.get_legend_handles_labels()
        ax.legend(handles=handles + extra, fontsize=6, loc="upper left")
    fig.suptitle("Gradient slope at init vs gain: measurement, mean-field theory and λ_max")
    return plot.save(fig, out, "8_slope_vs_gain_theory")
