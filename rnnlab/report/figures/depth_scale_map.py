"""Figure 11: trainability over gain × T with the line T = 6ξ (Schoenholz et al. 2017)."""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from rnnlab.measure import names
from rnnlab.report import plotting as plot
from rnnlab.report.figures import figure
from rnnlab.report.load import Frames

MULTIPLIER = 6
"""Trainable iff T ≲ 6ξ: Schoenholz et al. (2017, §5), fixed a priori, never fitted."""
TRAINED = 0.5
"""A run is trained when its final eval/loss_ratio is below this."""


def depth_scale_frame(f: Frames) -> pd.DataFrame:
    """Per run: gain, T, ξ = |theory/depth_scale| at init, trained; empty without them."""
    columns = ["run_id", "model.gain", "task.seq_len", "xi", "trained"]
    runs = f.drawn
    h = f.history[(f.history.step == 0) & (f.history.key == names.THEORY_DEPTH_SCALE)]
    if h.empty or not {"model.gain", "task.seq_len"} <= set(runs.columns):
        return pd.DataFrame(columns=columns)
    xi = h.groupby("run_id").value.first(skipna=False).abs().rename("xi")
    d = runs[["run_id", "model.gain", "task.seq_len", "final_loss_ratio"]].merge(xi, on="run_id")
    return d.assign(trained=d.final_loss_ratio < TRAINED)[columns]


@figure(
    11,
    f"Trainability against the depth scale: the share of seeds trained (final eval loss / "
    f"baseline < {TRAINED}) over gain and T, with the line T = {MULTIPLIER}ξ (ξ = 1/|ln χ₁|).",
    elman_only=True,
)
def depth_scale_map(f: Frames, out: Path) -> list[Path] | None:
    """One cell per (gain, T), coloured by the share of its seeds that trained; the line
    T = 6ξ(g) through the measured ξ of each gain. Drawn only for a sweep over both (≥ 3
    values each)."""
    d = depth_scale_frame(f)
    if d.empty or d["model.gain"].nunique() < 3 or d["task.seq_len"].nunique() < 3:
        return None  # a map needs a grid: at least three gains by three lengths
    share = d.groupby(["task.seq_len", "model.gain"]).trained.mean().unstack()  # T × g
    gains, lengths = list(share.columns), list(share.index)
    xi = d.groupby("model.gain").xi.median().reindex(gains)
    fig, ax = plt.subplots(figsize=(plot.WIDTH * 1.4, plot.WIDTH * 0.95), layout="constrained")
    mesh = ax.imshow(
        share.to_numpy(dtype=float),
        origin="lower",
        cmap="RdBu",
        vmin=0,
        vmax=1,
        aspect="auto",
        extent=(-0.5, len(gains) - 0.5, -0.5, len(lengths) - 0.5),
    )
    fig.colorbar(mesh, ax=ax, label="share of seeds trained")
    # T = 6ξ on the cells' axes: T's index is log-interpolated between the swept lengths.
    logs = np.log(np.asarray(lengths, dtype=float))
    line = np.interp(
        np.log(MULTIPLIER * xi.to_numpy()),
        logs,
        np.arange(len(lengths)),
        left=-0.5,
        right=len(lengths) - 0.5,
    )
    top = np.log(MULTIPLIER * xi.to_numpy()) > logs[-1]
    ax.plot(
        np.arange(len(gains)),
        np.where(top, len(lengths) - 0.5, line),
        color="black",
        lw=1.5,
        marker="o",
        ms=3,
        label=f"T = {MULTIPLIER}ξ",
    )
    ax.set_xticks(range(len(gains)), [f"{g:g}" for g in gains], fontsize=7)
    ax.set_yticks(range(len(lengths)), [str(t) for t in lengths], fontsize=7)
    ax.set_xlabel("gain g (σ_w)")
    ax.set_ylabel("sequence length T")
    ax.set_ylim(-0.5, len(lengths) - 0.5)
    agree = (d["task.seq_len"] <= MULTIPLIER * d.xi) == d.trained
    ax.set_title(
        f"Trainable iff T ≤ {MULTIPLIER}ξ? agreement {agree.mean():.2f} over {len(d)} runs",
        fontsize=8,
    )
    ax.legend(fontsize=7, loc="upper right")
    return plot.save(fig, out, "11_depth_scale_map")
