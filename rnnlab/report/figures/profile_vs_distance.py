"""Figure 1: n_{T−k}/n_T against distance k, at init and after training, one y range."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.lines import Line2D

from rnnlab.report import plotting as plot
from rnnlab.report.figures import figure
from rnnlab.report.load import Frames


def profile_frame(f: Frames) -> pd.DataFrame:
    """Profiles at init and at the end, normalised: n_{L−k} / n_L against distance k."""
    return plot.relative_profiles(f.profiles, f)


def profile_marks(f: Frames) -> pd.DataFrame:
    """Where each median profile of figure 1 leaves the y range or underflows.

    One row per (panel, hue, phase) with an event: ``kind`` is "below range", "above range"
    (the median first crosses 10^∓plot.DECADES at ``k``), "underflow" (some seed's n reached
    exactly 0 at ``k``: the line ends at k − 1) or "not finite" (some seed's ratio is inf or
    NaN at ``k``, an overflow: the line ends at k − 1; with nothing finite before it, the
    marker sits on the top edge at ``k``), ``y`` where to draw the marker.
    """
    data = profile_frame(f)
    cols = ["col", "hue", "phase", "kind", "k", "y"]
    if data.empty:
        return pd.DataFrame(columns=cols)
    lo, hi = 10.0**-plot.DECADES, 10.0**plot.DECADES
    data = data.assign(_col=data[f.col] if f.col else "", _hue=data[f.hue] if f.hue else "")
    rows = []
    for (c, h, phase), d in data.groupby(["_col", "_hue", "phase"]):
        pos = d[np.isfinite(d.ratio) & (d.ratio > 0)]
        med = pos.groupby("k").ratio.median().sort_index()
        out = med[(med < lo) | (med > hi)]
        if len(out):
            k = int(out.index[0])
            below = out.iloc[0] < lo
            rows.append(
                (c, h, phase, "below range" if below else "above range", k, lo if below else hi)
            )
        zero = d[d.ratio == 0]
        if len(zero):
            k = int(zero.k.min())
            end = med[med.index < k]
            y = float(np.clip(end.iloc[-1], lo, hi)) if len(end) else lo
            rows.append((c, h, phase, "underflow", k - 1, y))
        bad = d[~np.isfinite(d.ratio)]
        if len(bad):
            k = int(bad.k.min())
            end = med[med.index < k]
            if len(end):
                rows.append(
                    (c, h, phase, "not finite", k - 1, float(np.clip(end.iloc[-1], lo, hi)))
                )
            else:  # no line to end: on the top edge, where an overflow leaves the range
                rows.append((c, h, phase, "not finite", k, hi))
    return pd.DataFrame(rows, columns=cols)


MARKERS = {
    "below range": ("v", rf"leaves the y range (below $10^{{-{plot.DECADES}}}$)"),
    "above range": ("^", rf"leaves the y range (above $10^{{{plot.DECADES}}}$)"),
    "underflow": ("X", "underflow: n = 0 ({dtype}) beyond"),
    "not finite": ("D", "not finite (inf or NaN: overflow) beyond"),
}


@figure(
    1,
    "Gradient norm against distance at init and after training: "
    "vanishing curves fall, exploding ones rise.",
)
def gradient_profile_vs_distance(f: Frames, out: Path) -> list[Path] | None:
    data = profile_frame(f)
    shown = data[np.isfinite(data.ratio) & (data.ratio > 0)]
    if shown.empty:
        return None  # no profile has a finite, non-zero point: nothing to draw a line of
    # hues and panels of every profile, finite or not: one with no finite point keeps its
    # colour in the legend and its panel, where its marker says why it has no line
    hue_order = plot.order(f.hue, data[f.hue]) if f.hue else None
    g = sns.relplot(
        data=shown,
        x="k",
        y="ratio",
        hue=f.hue,
        hue_order=hue_order,
        style="phase",
        style_order=[p for p in ("init", "end of training") if p in set(shown.phase)],
        col=f.col,
        col_order=plot.order(f.col, data[f.col]) if f.col else None,
        kind="line",
        estimator="median",
        errorbar=("pi", 100),
        palette=plot.palette(f.hue, data),
        col_wrap=plot.wrap(f, data),
        height=plot.WIDTH * 0.8,
        aspect=1.1,
        facet_kws={"sharex": False, "sharey": True},
        linewidth=1.2,
    )
    g.set(
        yscale="log",
        ylim=(10.0**-plot.DECADES, 10.0**plot.DECADES),
        yticks=[10.0**e for e in range(-plot.DECADES, plot.DECADES + 1, 4)],
    )
    marks = profile_marks(f)
    pal = plot.palette(f.hue, data) or {}
    for key, ax in plot.facet_axes(g, f.col):
        m = marks if key is None else marks[marks.col == key]
        k = (data if key is None else data[data[f.col] == key]).k
        ax.set_xlim(-0.02 * k.max() - 0.1, 1.02 * k.max() + 0.1)  # every distance, drawn or not
        for r in m.itertuples():
            ax.plot(
                r.k,
                r.y,
                MARKERS[r.kind][0],
                ms=5,
                color=pal.get(r.hue, "0.2"),
                mec="black",
                mew=0.4,
                clip_on=False,
                zorder=5,
            )
    extra = {
        MARKERS[k][1].replace("{dtype}", plot.dtype(f)): Line2D(
            [], [], ls="", marker=MARKERS[k][0], color="0.5", mec="black", mew=0.4
        )
        for k in MARKERS
        if k in set(marks.kind)
    }
    plot.legend(g, extra)
    plot.label_every_panel(g, "distance k = T − t (steps back)", r"$n_{T-k}\,/\,n_T$")
    plot.titles(g, f.col)
    g.figure.suptitle(
        "Gradient norm ‖∂L/∂h_t‖ vs distance (median over seeds, band: min–max; "
        rf"y range $10^{{\pm {plot.DECADES}}}$)",
        y=1.03,
    )
    return plot.save(g, out, "1_profile_vs_distance")
