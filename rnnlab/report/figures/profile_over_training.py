"""Figure 7: the whole profile over training, one clipped colour scale for all panels."""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.colors import ListedColormap, Normalize
from matplotlib.patches import Patch
from matplotlib.ticker import MaxNLocator

from rnnlab.report import plotting as plot
from rnnlab.report.figures import figure
from rnnlab.report.load import Frames


def profile_heatmap_frame(f: Frames) -> pd.DataFrame:
    """log10 n_{T−k}/n_T over (training step, distance k) for each hue value at the longest
    length (first seed): one run per hue value, the first by name (then run id) where other
    swept keys or equal names leave several. ``log10_ratio`` is NaN where the ratio is 0 or
    not finite: ``underflow`` where n underflowed to 0, else an overflow (inf or NaN)."""
    p = plot.with_params(f.profiles, f, "task.seq_len")
    if "task.seq_len" in p.columns and not p.empty:
        p = p[p["task.seq_len"] == p["task.seq_len"].max()]
    if "seed" in p.columns and not p.empty:
        p = p[p.seed == p.seed.min()]
    if not p.empty:  # one run per hue value; runs may share a name (ad-hoc runs): by id then
        names = f.runs.set_index("run_id").name
        hue = f.hue or "run_id"
        first = p.assign(_name=p.run_id.map(names)).sort_values(["_name", "run_id"])
        p = p[p.run_id.isin(set(first.groupby(hue).run_id.first()))]
    n = p.n_t.astype(float)
    ref = p[p.k == 0].set_index(["run_id", "step"]).n_t.astype(float)
    n_T = ref.reindex(pd.MultiIndex.from_frame(p[["run_id", "step"]])).to_numpy()
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        ratio = n / n_T
        return p.assign(
            log10_n=np.log10(n.where((n > 0) & np.isfinite(n))),
            log10_ratio=np.log10(ratio.where((ratio > 0) & np.isfinite(ratio))),
            underflow=n == 0,
        )


def picked(f: Frames, hue: str) -> list[str]:
    """The swept keys besides the hue (and the seed and length figure 7 fixes) for which some
    hue value has runs with several values: its panel shows one of them, and says which."""
    runs = f.drawn
    if "task.seq_len" in runs.columns:
        runs = runs[runs["task.seq_len"] == runs["task.seq_len"].max()]
    others = [k for k in f.swept if k not in (hue, "seed", "task.seq_len") and k in runs.columns]
    if hue not in runs.columns:
        return []
    return [k for k in others if runs.groupby(hue)[k].nunique().max() > 1]


def edges(centres) -> np.ndarray:
    """The edges of cells centred on sorted ``centres``, halfway between neighbours, as
    pcolormesh's shading="nearest" draws them; a lone centre (a run probed once: it diverged
    at its first step) gets a cell one unit wide rather than none."""
    c = np.asarray(centres, dtype=float)
    if len(c) == 1:
        return np.array([c[0] - 0.5, c[0] + 0.5])
    mid = (c[1:] + c[:-1]) / 2
    return np.concatenate([[2 * c[0] - mid[0]], mid, [2 * c[-1] - mid[-1]]])


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
    clipped = underflow = not_finite = False
    mesh = None
    for ax, key in zip(axes[0], keys, strict=False):
        d = p[p[hue] == key]
        mat = d.pivot(index="k", columns="step", values="log10_ratio").sort_index()
        values = mat.to_numpy()
        cells = edges(mat.columns), edges(mat.index)
        mesh = ax.pcolormesh(
            *cells,
            np.clip(values, -plot.DECADES, plot.DECADES),
            cmap=cmap,
            norm=norm,
            shading="flat",
        )
        out_of_range = np.isfinite(values) & (np.abs(values) > plot.DECADES)
        if out_of_range.any():
            clipped = True
            ax.pcolor(
                *cells,
                np.ma.masked_where(~out_of_range, np.ones_like(values)),
                hatch="///",
                facecolor="none",
                edgecolor="white",
                lw=0,
                shading="flat",
            )
        under = d.pivot(index="k", columns="step", values="underflow").reindex_like(mat)
        under = under.fillna(False).to_numpy(dtype=bool)
        underflow |= bool((np.isnan(values) & under).any())
        overflow = np.isnan(values) & ~under
        if overflow.any():
            not_finite = True
            ax.pcolormesh(
                *cells,
                np.ma.masked_where(~overflow, np.ones_like(values)),
                cmap=ListedColormap(["0.15"]),
                shading="flat",
            )
        ax.grid(False)
        row = f.runs.set_index("run_id").loc[d.run_id.iloc[0]]
        which = ", ".join(f"{plot.label(k)} = {row[k]}" for k in picked(f, hue))
        ax.set_title(f"{key}\n{row['name']}" + (f"\n{which}" if which else ""), fontsize=7)
        if len(mat.columns) == 1:  # probed once: that step, not fractions of a step around it
            ax.set_xticks(mat.columns)
        else:
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
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
        handles.append(Patch(facecolor="0.8", label=f"n underflowed to 0 ({plot.dtype(f)})"))
    if not_finite:
        handles.append(Patch(facecolor="0.15", label="not finite (inf or NaN: overflow)"))
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
