"""Figure 3: eval loss ÷ baseline over training."""

from __future__ import annotations

from pathlib import Path

from rnnlab.measure import names
from rnnlab.report import plotting as plot
from rnnlab.report.figures import figure
from rnnlab.report.load import Frames


def mark_single_points(g, h, hue: str | None, facet: str | None) -> None:
    """A line of one point (every run of it diverged or ended at its first probe) draws
    nothing: mark it, in its line's colour, so no condition silently disappears."""
    legend = g._legend
    pairs = zip(legend.texts, legend.legend_handles, strict=True) if legend is not None else ()
    colors = {t.get_text(): h.get_color() for t, h in pairs}
    keys = [k for k in (facet, hue) if k]
    for key, d in h.groupby(keys, dropna=False) if keys else [((), h)]:
        if d.step.nunique() != 1:
            continue
        key = key if isinstance(key, tuple) else (key,)
        where = dict(zip(keys, key, strict=True))
        ax = g.axes_dict.get(where[facet]) if facet else g.axes.flat[0]
        color = colors.get(str(where[hue])) if hue else None
        color = "0.2" if color is None else color
        ax.plot(d.step.iloc[0], d.value.median(), "o", ms=4, color=color, zorder=5)


@figure(3, "Eval loss ratio over training; the dashed line is chance.")
def learning_curves(f: Frames, out: Path) -> list[Path] | None:
    h = plot.with_params(f.history[f.history.key == names.EVAL_LOSS_RATIO], f)
    if not plot.finite(h.value).any():
        return None  # no finite eval loss: every run diverged before its first probe
    facet, hue = f.hue, f.col
    g = plot.over_training(h, f, hue, facet, linewidth=1.2)
    g.set(yscale="log")
    for ax in g.axes.flat:
        ax.axhline(1.0, color="0.3", lw=0.8, ls="--")
    mark_single_points(g, g.data, hue, facet)  # what was drawn: finite values
    plot.label_every_panel(g, "training step", "eval loss / baseline")
    plot.titles(g, facet)
    g.figure.suptitle(
        "Learning curves (median over seeds, band: min–max; dashed: input-ignoring baseline)",
        y=1.03,
    )
    return plot.save(g, out, "3_learning_curves")
