"""Figure 2: the trainability map, final eval loss ÷ baseline on a clipped colour scale."""

from __future__ import annotations

import math
from pathlib import Path

import matplotlib
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.colors import TwoSlopeNorm
from matplotlib.patches import Patch, Rectangle

from rnnlab.report import plotting as plot
from rnnlab.report.figures import figure
from rnnlab.report.load import Frames


def trainability_frame(f: Frames) -> pd.DataFrame:
    """Median final eval/loss_ratio over seeds, one cell per (hue, col) grid point."""
    runs = f.drawn
    rows, cols = f.hue or "name", f.col or "experiment"
    data = runs.assign(experiment=f.experiment)
    cell = data.groupby([rows, cols]).agg(
        ratio=("final_loss_ratio", "median"),
        runs=("status", "size"),
        diverged=("status", lambda s: (s == "diverged").sum()),
    )
    cell = cell.reset_index()
    lo, hi = plot.RATIO_RANGE
    cell["clipped"] = np.select(
        [cell.ratio >= hi, cell.ratio <= lo], [f"≥ {hi:g}", f"≤ {lo:g}"], default=""
    )
    return cell


@figure(2, "Final eval loss relative to the input-ignoring baseline; blue learned, red did not.")
def trainability_map(f: Frames, out: Path) -> list[Path]:
    cell = trainability_frame(f)
    rows, cols = f.hue or "name", f.col or "experiment"
    row_order, col_order = plot.order(rows, cell[rows]), plot.order(cols, cell[cols])
    ratio = cell.pivot(index=rows, columns=cols, values="ratio").reindex(row_order)[col_order]
    div = cell.pivot(index=rows, columns=cols, values="diverged").reindex(row_order)[col_order]
    n = cell.pivot(index=rows, columns=cols, values="runs").reindex(row_order)[col_order]
    lo, hi = plot.RATIO_RANGE
    log = np.log10(ratio.astype(float).where(ratio > 0)).clip(math.log10(lo), math.log10(hi))
    fig, ax = plt.subplots(figsize=(plot.WIDTH * 1.35, max(2.2, 0.5 * len(ratio) + 1.6)))
    cmap = sns.color_palette("RdBu_r", as_cmap=True).with_extremes(bad="0.85")
    norm = TwoSlopeNorm(0, math.log10(lo), math.log10(hi))
    sns.heatmap(
        log,
        cmap=cmap,
        norm=norm,
        vmin=math.log10(lo),  # seaborn's own range, which an all-NaN map has none of
        vmax=math.log10(hi),
        ax=ax,
        cbar_kws={
            "label": f"eval loss / baseline (clipped to {lo:g} … {hi:g})",
            "extend": "both",
            "ticks": [math.log10(lo), -0.5, 0, 0.5, math.log10(hi)],
            "format": matplotlib.ticker.FuncFormatter(lambda v, _: f"{10**v:.2g}"),
        },
        linewidths=0.5,
        linecolor="white",
    )
    used = set()
    for i, rname in enumerate(ratio.index):
        for j, cname in enumerate(ratio.columns):
            v, d, k = ratio.loc[rname, cname], div.loc[rname, cname], n.loc[rname, cname]
            hatch = None
            if np.isfinite(d) and d > 0:
                hatch, kind = "xxx", "diverged"
            elif np.isfinite(v) and v >= hi:
                hatch, kind = "///", f"≥ {hi:g}"
            elif np.isfinite(v) and v <= lo:
                hatch, kind = "...", f"≤ {lo:g}"
            if hatch:
                used.add((hatch, kind))
                ax.add_patch(
                    Rectangle((j, i), 1, 1, fill=False, hatch=hatch, edgecolor="0.35", lw=0)
                )
            text = plot.sci(v) if np.isfinite(v) else "n/a" if np.isfinite(k) else "not run"
            if np.isfinite(d) and d > 0:
                text += f"\n{int(d)}/{int(k)} div."
            shade = (
                cmap(norm(log.loc[rname, cname]))
                if np.isfinite(log.loc[rname, cname])
                else (1, 1, 1)
            )
            light = 0.299 * shade[0] + 0.587 * shade[1] + 0.114 * shade[2] > 0.5
            ax.text(
                j + 0.5,
                i + 0.5,
                text,
                ha="center",
                va="center",
                fontsize=7,
                color="black" if light else "white",
                bbox={"boxstyle": "round,pad=0.15", "fc": shade, "ec": "none"} if hatch else None,
            )
    ax.set_xlabel(plot.label(cols))
    ax.set_ylabel(plot.label(rows))
    ax.set_title(
        "Trainability: final eval loss ÷ baseline\n(median over seeds; < 1 learned, 1 = chance)"
    )
    if used:
        labels = {
            "xxx": "diverged (n/m: seeds of the cell that diverged)",
            "///": f"above the colour range (ratio ≥ {hi:g})",
            "...": f"below the colour range (ratio ≤ {lo:g})",
        }
        handles = [
            Patch(facecolor="white", edgecolor="0.35", hatch=h, label=labels[h])
            for h in ("///", "...", "xxx")
            if any(u[0] == h for u in used)
        ]
        ax.legend(
            handles=handles,
            loc="upper center",
            bbox_to_anchor=(0.5, -0.22),
            ncol=1,
            fontsize=7,
            frameon=False,
        )
    return plot.save(fig, out, "2_trainability_map")
