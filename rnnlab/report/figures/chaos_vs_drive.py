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
    """Per run at init: σ_u = √(theory/q_in), λ_max and ½ ln χ₁ as logged (NaN, ±inf and
    SQLite's ±1.8e308 kept: the figure marks them; σ_u NaN where q_in is not finite); empty
    without them."""
    columns = ["run_id", "sigma_u", "lyapunov", "theory"]
    h = f.history[f.history.step == 0]
    need = [names.THEORY_Q_IN, names.LYAPUNOV_MAX, names.THEORY_SLOPE]
    if h.empty or not set(need) <= set(h.key):
        return pd.DataFrame(columns=columns)
    # dropna=False: a metric NaN in every run (λ_max where the state overflowed) is a column
    wide = h.pivot_table(
        index="run_id", columns="key", values="value", aggfunc="first", dropna=False
    )
    wide = wide[wide.index.isin(f.drawn.run_id)]
    q_in = wide[names.THEORY_Q_IN].to_numpy(dtype=float)
    return pd.DataFrame(
        {
            "run_id": wide.index,
            "sigma_u": np.sqrt(np.where(plot.finite(q_in) & (q_in >= 0), q_in, np.nan)),
            "lyapunov": wide[names.LYAPUNOV_MAX].to_numpy(dtype=float),
            "theory": wide[names.THEORY_SLOPE].to_numpy(dtype=float),
        }
    )


def zero_crossing(x: np.ndarray, y: np.ndarray) -> float:
    """The first x where y (ordered by x) changes sign, linearly interpolated; nan if none.
    Points without a finite x and y are left out: no crossing is placed between ±inf."""
    keep = plot.finite(x) & plot.finite(y)
    order = np.argsort(x[keep])
    x, y = x[keep][order], y[keep][order]
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
    unplaced = int((~plot.finite(d.sigma_u)).sum())  # q_in not finite: no x to draw it at
    d = d[plot.finite(d.sigma_u)].sort_values("sigma_u")
    shown = plot.finite(d.lyapunov) | plot.finite(d.theory)
    if len(d) < 4 or not shown.any() or not d.sigma_u.min() > 0:
        return None  # nothing finite to draw, or no sweep of the drive
    if d.sigma_u.max() < 2 * d.sigma_u.min():
        return None
    fig, ax = plt.subplots(figsize=(plot.WIDTH * 1.2, plot.WIDTH * 0.85), layout="constrained")
    ax.axhline(0, color="0.5", lw=0.6)
    extra = []  # legend entries for what is off the scale or not drawn
    for column, what, label, style in (
        ("theory", "½ ln χ₁", "½ ln χ₁ per run", {"s": 8, "color": "black", "zorder": 2}),
        ("lyapunov", "λ_max", "λ_max (QR)", {"s": 14, "marker": "x", "color": "C3", "zorder": 3}),
    ):
        x, y = d.sigma_u.to_numpy(), d[column].to_numpy(dtype=float)
        ok = plot.finite(y)
        if ok.any():
            ax.scatter(x[ok], y[ok], label=label, **style)
        extra += plot.mark_off_scale(ax, x, y, what, color=style["color"], ms=5)
    if unplaced:
        extra.append(plot.note(f"q_in not finite: {plot.n_runs(unplaced)}, not drawn"))
    crossings = {"χ₁ = 1": zero_crossing(d.sigma_u.to_numpy(), d.theory.to_numpy())}
    runs = f.drawn.set_index("run_id").loc[d.run_id]
    nominal = ["model.activation", "model.gain"]
    if set(nominal) <= set(runs.columns) and (runs[nominal].nunique() == 1).all():
        from rnnlab.measure import theory  # the curve at the runs' one activation and gain

        act, gain = runs["model.activation"].iloc[0], float(runs["model.gain"].iloc[0])
        s = np.linspace(0, d.sigma_u.max() * 1.05, 200)
        curve = np.array([theory.mean_field(act, gain, v * v).slope for v in s])
        if plot.finite(curve).any():  # ±inf (an overflowing gain) has no line to draw
            curve = np.where(plot.finite(curve), curve, np.nan)
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
    handles, _ = ax.get_legend_handles_labels()
    ax.legend(handles=handles + extra, fontsize=7, loc="best")
    ax.set_title("Input suppresses chaos", fontsize=9)
    return plot.save(fig, out, "10_chaos_vs_drive")
