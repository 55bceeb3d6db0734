"""Figure 7: the whole profile over training, one clipped colour scale for all panels."""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.colors import Normalize
from matplotlib.patches import Patch

from rnnlab.report import plotting as plot
from rnnlab.report.figures import figure
from rnnlab.report.load import Frames


def profile_heatmap_frame(f: Frames) -> pd.DataFrame:
    """log10 n_{T−k}/n_T over (training step, distance k) for each hue value at the longest
    length (first seed); ``log10_n`` is NaN where n underflowed to 0."""
    p = plot.with_params(f.profiles, f, "task.seq_len")
    if "task.seq_len" in p.columns and not p.empty:
        p = p[p["task.seq_len"] == p["task.seq_len"].max()]
    if "seed" in p.columns and not p.empty:
        p = p[p.seed == p.seed.min()]
    if not p.empty:  # one run per hue value (other swept keys: the first run by name)
        names = f.runs.set_index("run_id").name
        hue = f.hue or "run_id"
        keep = p.assign(_name=p.run_id.map(names)).groupby(hue)._name.min()
        p = p[p.run_id.map(names).isin(set(keep))]
    n = p.n_t.astype(float)
    ref = p[p.k == 0].set_index(["run_id", "step"]).n_t.astype(float)
    n_T = ref.reindex(pd.MultiIndex.from_frame(p[["run_id", "step"]])).to_numpy()
    with np.errstate(divide="ignore", invalid="ignore"):
        return p.assign(
            log10_n=np.log10(n.where(n > 0)), log10_ratio=np.log10(n.where(n > 0) / n_T)
        )


@figure(7, "The whole gradient profile over training (first seed, longest sequence).")
def profile_heatmaps(f: Frames, out: Path) -> list[Path]:
    """One shared, clipped colour scale: panels compare across activations."""
    p = profile_heatmap_frame(f)
    hue = f.hue or "run_id"
    keys = plot.order(hue if f.hue else None, p[hue]) if not p.empty else []
    n = max(1, len(keys))
    fig, axes = plt.subplots(
        1,
        n,
        figsize=(plot.WIDTH * 0.95 * n + 0.8, plot.WIDTH * 0.95),
        squeeze=False,
        layout="constrained",
    )
    cmap = sns.color_palette("RdBu_r", as_cmap=True).with_extremes(bad="0.8")
    norm = Normalize(-plot.DECADES, plot.DECADES)
    clipped = underflow = False
    mesh = None
    names = f.runs.set_index("run_id").name
    for ax, key in zip(axes[0], keys, strict=False):
        d = p[p[hue] == key]
        mat = d.pivot(index="k", columns="step", values="log10_ratio").sort_index()
        values = mat.to_numpy()
        mesh = ax.pcolormesh(
            mat.columns,
            mat.index,
            np.clip(values, -plot.DECADES, plot.DECADES),
            cmap=cmap,
            norm=norm,
            shading="nearest",
        )
        out_of_range = np.isfinite(values) & (np.abs(values) > plot.DECADES)
        if out_of_range.any():
            clipped = True
            ax.pcolor(
                mat.columns,
                mat.index,
                np.ma.masked_where(~out_of_range, np.ones_like(values)),
                hatch="///",
                facecolor="none",
                edgecolor="white",
                lw=0,
                shading="nearest",
            )
        underflow |= bool(np.isnan(values).any())
        ax.grid(False)
        ax.set_title(f"{key}\n{names.get(d.run_id.iloc[0], '')}", fontsize=7)
        ax.set_xlabel("training step")
        ax.set_ylabel("distance k")
    handles = []
    if clipped:
        handles.append(
            Patch(
                facecolor=cmap(0.0),
                edgecolor="white",
                hatch="///",
                label=rf"beyond $10^{{\pm {plot.DECADES}}}$ (clipped)",
            )
        )
    if underflow:
        handles.append(Patch(facecolor="0.8", label="n underflowed to 0 (float32)"))
    if handles:
        fig.legend(
            handles=handles,
            loc="outside lower center",
            ncol=len(handles),
            fontsize=7,
            frameon=False,
        )
    if mesh is not None:
        fig.colorbar(
            mesh,
            ax=axes[0].tolist(),
            pad=0.01,
            extend="both" if clipped else "neither",
            label=rf"$\log_{{10}}\, n_{{T-k}}/n_T$ (clipped to ±{plot.DECADES})",
        )
    T = int(p["task.seq_len"].max()) if "task.seq_len" in p.columns and not p.empty else None
    fig.suptitle(
        f"Gradient profile over training{f' at T = {T}' if T else ''}, first seed: "
        "one colour scale for all panels (blue vanishing, red exploding)",
        fontsize=9,
    )
    return plot.save(fig, out, "7_profile_over_training")
