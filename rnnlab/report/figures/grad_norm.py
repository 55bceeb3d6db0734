"""Figure 4: the global gradient norm over training, clipping and divergence marked."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
from matplotlib.lines import Line2D

from rnnlab.measure import names
from rnnlab.report import plotting as plot
from rnnlab.report.figures import figure
from rnnlab.report.load import Frames


@figure(4, "Global gradient norm per run; spikes are exploding gradients.")
def grad_norm_over_training(f: Frames, out: Path) -> list[Path] | None:
    h = plot.with_params(f.history[f.history.key == names.GRAD_NORM], f)
    # +inf (stored as 1.8e308) is drawn a decade above the largest finite norm: a log axis
    # asked to span ~300 decades gives up and shows 1–10, hiding everything above
    finite = h.value[plot.finite(h.value)]
    if finite.empty:
        return None  # no finite norm: every run diverged at its first step
    h = h.assign(value=h.value.clip(upper=10 * finite.max()))
    g = plot.over_training(  # every run its own thin line: a spike is one run's
        h, f, f.hue, f.col, units="run_id", estimator=None, errorbar=None,
        palette=plot.palette(f.hue, h), col_wrap=plot.wrap(f, h), facet_kws={},
        linewidth=0.6, alpha=0.8,
    )  # fmt: skip
    g.set(yscale="log")
    clipped = plot.with_params(
        f.history[(f.history.key == names.GRAD_CLIPPED) & (f.history.value > 0)], f
    )
    diverged = f.drawn[f.drawn.status == "diverged"]
    for key, ax in plot.facet_axes(g, f.col):
        if not clipped.empty:
            c = clipped if key is None else clipped[clipped[f.col] == key]
            norms = h.set_index(["run_id", "step"]).value
            y = norms.reindex(pd.MultiIndex.from_frame(c[["run_id", "step"]])).to_numpy()
            ax.scatter(c.step, y, s=6, marker="|", color="0.2")
        d = diverged if key is None else diverged[diverged[f.col] == key]
        pal = plot.palette(f.hue, h) or {}
        for _, r in d.iterrows():  # the step it diverged, and its norm off the top (inf)
            ax.axvline(r.diverged_step, color="red", lw=0.8, ls=":")
            ax.plot(
                r.diverged_step,
                1.0,
                "^",
                ms=5,
                transform=ax.get_xaxis_transform(),
                color=pal.get(r.get(f.hue), "0.3"),
                mec="red",
                mew=0.6,
                clip_on=False,
            )
    extra, events = {}, []
    if not clipped.empty:
        extra[f"clipped ({names.GRAD_CLIPPED} = 1)"] = Line2D(
            [], [], ls="", marker="|", color="0.2"
        )
        events.append("| clipped")
    if len(diverged):
        extra["diverged at this step (▲)"] = Line2D(
            [], [], color="red", lw=0.8, ls=":", marker="^", mec="red", mfc="0.6"
        )
        events.append("red: diverged")
    plot.legend(g, extra)
    plot.label_every_panel(
        g, "training step", r"$\|\partial L/\partial\theta\|_2$ (before clipping)"
    )
    plot.titles(g, f.col)
    what = f" ({', '.join(events)})" if events else ""
    g.figure.suptitle(f"Gradient norm over training, one line per run{what}", y=1.03)
    return plot.save(g, out, "4_grad_norm_over_training")
