"""Figure 10: λ_max and ½ ln χ₁ against the input drive σ_u (input suppresses chaos)."""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from rnnlab.measure import names
from rnnlab.report import plotting as plot
from rnnlab.report.figures import figure
from rnnlab.report.load import Frames


def drive_frame(f: Frames) -> pd.DataFrame:
    """Per run at init: σ_u = √(theory/q_in), λ_max and ½ ln χ₁; empty without them."""
    columns = ["run_id", "sigma_u", "lyapunov", "theory"]
    h = f.history[f.history.step == 0]
    need = [names.THEORY_Q_IN, names.LYAPUNOV_MAX, names.THEORY_SLOPE]
    if h.empty or not set(need) <= set(h.key):
        return pd.DataFrame(columns=columns)
    wide = h.pivot_table(index="run_id", columns="key", values="value")
    wide = wide[wide.index.isin(f.drawn.run_id)].dropna(subset=need)
    return pd.DataFrame(
        {
            "run_id": wide.index,
            "sigma_u": np.sqrt(wide[names.THEORY_Q_IN].to_numpy()),
            "lyapunov": wide[names.LYAPUNOV_MAX].to_numpy(),
            "theory": wide[names.THEORY_SLOPE].to_numpy(),
        }
    )


def zero_crossing(x: np.ndarray, y: np.ndarray) -> float:
    """The first x where y (ordered by x) changes sign, linearly interpolated; nan if none."""
    order = np.argsort(x)
    x, y = x[order], y[order]
    for i in range(len(x) - 1):
        if y[i] > 0 >= y[i + 1] or y[i] < 0 <= y[i + 1]:
            return float(x[i] + (x[i + 1] - x[i]) * y[i] / (y[i] - y[i + 1]))
    return float("nan")


@figure(
    10,
    "Input suppresses chaos: the largest Lyapunov exponent at init against the drive "
    "σ_u = √q_in, beside the mean-field ½ ln χ₁; it crosses zero where χ₁ = 1.",
    elman_only=True,
)
def chaos_vs_drive(f: Frames, out: Path) -> list[Path] | None:
    """λ_max (one point per run) and ½ ln χ₁ against σ_u; drawn only for a sweep of the drive
    (σ_u spanning at least a factor of 2 over 4 or more runs)."""
    d = drive_frame(f)
    if len(d) < 4 or not d.sigma_u.min() > 0 or d.sigma_u.max() < 2 * d.sigma_u.min():
        return None
    d = d.sort_values("sigma_u")
    fig, ax = plt.subplots(figsize=(plot.WIDTH * 1.2, plot.WIDTH * 0.85), layout="constrained")
    ax.axhline(0, color="0.5", lw=0.6)
    ax.scatter(d.sigma_u, d.theory, s=8, color="black", label="½ ln χ₁ per run", zorder=2)
    ax.scatter(d.sigma_u, d.lyapunov, s=14, marker="x", color="C3", label="λ_max (QR)", zorder=3)
    crossings = {"χ₁ = 1": zero_crossing(d.sigma_u.to_numpy(), d.theory.to_numpy())}
    runs = f.drawn.set_index("run_id")
    if {"model.activation", "model.gain"} <= set(runs.columns):  # the curve at the nominal g
        from rnnlab.measure import theory

        act = runs.loc[d.run_id, "model.activation"].mode()[0]
        gain = float(runs.loc[d.run_id, "model.gain"].median())
        s = np.linspace(0, d.sigma_u.max() * 1.05, 200)
        curve = np.array([theory.mean_field(act, gain, v * v).slope for v in s])
        ax.plot(s, curve, color="black", lw=1, label=f"mean field ½ ln χ₁ (g = {gain:g})")
        crossings["χ₁ = 1"] = zero_crossing(s, curve)
    crossings["λ_max = 0"] = zero_crossing(d.sigma_u.to_numpy(), d.lyapunov.to_numpy())
    for (label, x0), color, (y, ha) in zip(
        crossings.items(), ("black", "C3"), ((0.6, "left"), (0.3, "right")), strict=True
    ):
        if np.isfinite(x0):
            ax.axvline(x0, color=color, lw=0.7, ls="--")
            ax.annotate(
                f" {label} at σ_u = {x0:.3g} ",
                (x0, y),
                xycoords=("data", "axes fraction"),
                color=color,
                fontsize=7,
                ha=ha,
            )
    ax.set_xlabel("input drive σ_u = √q_in")
    ax.set_ylabel("nats per step")
    ax.legend(fontsize=7, loc="upper right")
    ax.set_title("Input suppresses chaos", fontsize=9)
    return plot.save(fig, out, "10_chaos_vs_drive")
