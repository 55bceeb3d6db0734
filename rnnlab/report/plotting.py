"""What every figure shares: colours, labels, one value order, facet layout, legends, saving."""

from __future__ import annotations

import math
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only; never needs a display

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.colors import to_rgb
from matplotlib.lines import Line2D

from rnnlab.model import cells
from rnnlab.model.activations import ACTIVATION_COLORS, activation_rank
from rnnlab.report.load import Frames

# One colour per activation, shared by every figure and the MLflow UI (rnnlab.model.activations).
PALETTE = {a: to_rgb(c) for a, c in ACTIVATION_COLORS.items()}
CELL_PALETTE = {name: to_rgb(c.color) for name, c in cells.CELLS.items()}


LABELS = {
    "task.seq_len": "sequence length T",
    "model.gain": "gain g",
    "model.activation": "activation",
    "model.cell": "cell",
    "unit": "activation / cell",
    "model.init": "init",
    "model.hidden_size": "hidden size H",
    "train.lr": "learning rate",
    "train.steps": "training steps",
    "seed": "seed",
}


SHORT = {
    "task.seq_len": "T",
    "model.activation": "activation",
    "model.cell": "cell",
    "model.gain": "g",
}


WIDTH = 3.4  # inches: one column of a two-column paper


DECADES = 8  # figures 1 and 7 show n_{T−k}/n_T within 10^±8; beyond it: clipped and marked


RATIO_RANGE = (0.1, 10.0)  # the trainability map's colour scale; beyond it: hatched


def dtype(f: Frames) -> str:
    """The precision the drawn runs computed in, as a legend says where values underflow."""
    used = set(f.drawn["train.dtype"].dropna()) if "train.dtype" in f.drawn.columns else set()
    return " or ".join(sorted(used)) or "float32"  # float32: the default, and runs before it


def finite(values) -> np.ndarray:
    """True where a value can be drawn: not NaN, not ±inf, and not SQLite's stand-in for ±inf
    (±1.8e308: ``Frames.history`` holds what the store holds)."""
    v = np.asarray(values, dtype=float)
    return np.isfinite(v) & (np.abs(v) < sys.float_info.max)


def n_runs(n: int) -> str:
    """'1 run', '3 runs'."""
    return f"{n} run{'s' * (n != 1)}"


def note(text: str) -> Line2D:
    """A legend entry that is a line of text, no marker: what a figure left out, and why."""
    return Line2D([], [], ls="", label=text)


def drawable_ratios(data: pd.DataFrame) -> tuple[pd.DataFrame, dict[str, Line2D]]:
    """The rows of relative profiles (a ``ratio`` column) a log axis can draw (finite, above
    0), and legend notes counting the others, where their lines end: values that underflowed
    to 0 and values not finite (inf or NaN)."""
    ok = finite(data.ratio)
    zero = ok & (data.ratio.to_numpy(dtype=float) <= 0)
    notes = {}
    for n, what in (
        (int(zero.sum()), "0 (underflow)"),
        (int((~ok).sum()), "not finite (inf or NaN)"),
    ):
        if n:
            text = f"{n} of {len(data)} values {what}: not drawn, the line ends there"
            notes[text] = note(text)
    return data[ok & ~zero], notes


OFF_SCALE = {1.0: ("^", "+∞", "top", 1.0), -1.0: ("v", "−∞", "bottom", 0.0)}
"""sign → (marker, value, edge, y in axes fraction): how ±inf is drawn on a linear y axis."""


def mark_off_scale(ax, x, y, what: str, **style) -> list[Line2D]:
    """Draw each ±inf in ``y`` (or SQLite's ±1.8e308) at its x as ▲ on the panel's top edge
    or ▼ on its bottom edge, in ``style``: off any scale, yet not left out. Returns legend
    handles for what was drawn ("λ_max = +∞ (on the top edge)") and for each NaN, which has
    no place at all ("λ_max NaN: 2 runs, not drawn")."""
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    infinite = ~finite(y) & ~np.isnan(y)
    handles = []
    if infinite.any():
        ax.margins(y=0.12)  # room between the markers on the edges and the finite points
    for sign, (marker, value, edge, at_y) in OFF_SCALE.items():
        at = infinite & (np.sign(y) == sign)
        if at.any():
            ax.plot(
                x[at], np.full(at.sum(), at_y), marker, ls="",
                transform=ax.get_xaxis_transform(), clip_on=False, zorder=5, **style,
            )  # fmt: skip
            label = f"{what} = {value} (on the {edge} edge)"
            handles.append(Line2D([], [], ls="", marker=marker, label=label, **style))
    if n := int(np.isnan(y).sum()):
        handles.append(note(f"{what} NaN: {n_runs(n)}, not drawn"))
    return handles


def with_params(frame: pd.DataFrame, f: Frames, *extra: str) -> pd.DataFrame:
    keys = [k for k in dict.fromkeys([f.hue, f.col, "seed", *extra]) if k and k in f.runs.columns]
    return frame.merge(f.runs[["run_id", "status", *keys]], on="run_id")


def relative_profiles(p: pd.DataFrame, f: Frames) -> pd.DataFrame:
    """A profile frame (run_id, step, k, n_t: ``f.profiles`` or a profile table) at each run's
    first and last probe, ``phase`` init / end of training, ``ratio`` = n_{T−k} / n_T, with the
    runs' params (zeros and non-finite ratios kept: they are data)."""
    if p.empty:
        return p.assign(phase=[], ratio=[])
    p = p.reset_index(drop=True)
    first = p.groupby("run_id").step.transform("min")
    last = p.groupby("run_id").step.transform("max")
    p = p[(p.step == first) | (p.step == last)]
    p = p.assign(phase=np.where(p.step == first[p.index], "init", "end of training"))
    end = p[p.k == 0].set_index(["run_id", "step"]).n_t
    ref = end.reindex(pd.MultiIndex.from_frame(p[["run_id", "step"]])).to_numpy()
    with np.errstate(divide="ignore", invalid="ignore"):
        p = p.assign(ratio=p.n_t.to_numpy() / ref)
    return with_params(p, f)


def order(key: str | None, values) -> list:
    """One order for a key's values in every figure: activations by regime, numbers by size."""
    vals = list(dict.fromkeys(v for v in values if v is not None and v == v))  # no None, NaN
    if key == "model.activation":
        return sorted(vals, key=activation_rank)
    if key == "model.cell":
        return sorted(vals, key=lambda v: cells.NAMES.index(v) if v in cells.NAMES else 99)
    if key == "unit":  # activations by regime, then the gated cells
        gated = {c: (1, i, c) for i, c in enumerate(cells.NAMES)}
        return sorted(vals, key=lambda v: gated.get(v) or (0, *activation_rank(v)))
    try:
        return sorted(vals, key=float)
    except (TypeError, ValueError):
        return sorted(vals, key=str)


def palette(key: str | None, data: pd.DataFrame) -> dict | None:
    known = {"model.activation": PALETTE, "model.cell": CELL_PALETTE}.get(key)
    if key == "unit":
        known = PALETTE | CELL_PALETTE
    if known and key in data.columns:
        return {a: known[a] for a in data[key].unique() if a in known}
    return None


def colours(key: str | None, data: pd.DataFrame) -> dict:
    """``palette=`` for seaborn where the hue has its own colours (the activations', the
    cells'), else
    nothing (seaborn's defaults)."""
    pal = palette(key, data)
    return {"palette": pal} if pal else {}


def label(key: str | None) -> str:
    return LABELS.get(key, key or "")


def panel(key: str | None, value) -> str:
    """A facet title: "T = 100", "activation = tanh", "g = 1.5"."""
    return f"{SHORT.get(key, label(key).split(' ')[-1])} = {value}" if key else ""


def wrap(f: Frames, data: pd.DataFrame, facet: str | None = "col") -> int | None:
    """Columns per row: one row up to four panels, else rows of (nearly) equal length."""
    key = f.col if facet == "col" else facet
    n = data[key].nunique() if key and key in data.columns else 1
    if n <= 4:
        return None
    return math.ceil(n / math.ceil(n / 4))


def over_training(h: pd.DataFrame, f: Frames, hue: str | None, facet: str | None, **kw):
    """A metric against the training step, one panel per ``facet`` value, one line per ``hue``
    value (the median over seeds, the band their full range): the layout the figures of
    training share. ``kw`` adds to or overrides seaborn's ``relplot`` arguments. Values that
    are not finite (inf, NaN, SQLite's ±1.8e308) have no place on a line: they are left out
    and the legend says how many (a panel left empty keeps its place); ``h`` must hold some
    finite value (see :func:`finite`). The grid's ``data`` is what was drawn."""
    keep = finite(h[kw.get("y", "value")])
    left_out = int((~keep).sum())
    col_order = order(facet, h[facet]) if facet else None  # the panels of every value given
    wrapped = wrap(f, h, facet)
    given, h = h, h[keep]
    numeric = bool(hue) and pd.api.types.is_numeric_dtype(h[hue])
    args = {
        "data": h,
        "x": "step",
        "y": "value",
        "hue": hue,
        "hue_order": order(hue, h[hue]) if hue else None,
        "col": facet,
        "col_order": col_order,
        "kind": "line",
        "estimator": "median",
        "errorbar": ("pi", 100),
        "palette": "viridis" if numeric else None,
        "col_wrap": wrapped,
        "height": WIDTH * 0.8,
        "aspect": 1.1,
        "facet_kws": {"sharey": False},
    }
    x = h[(args | kw)["x"]].unique()
    if len(x) == 1:  # every run ended at its first probe: a line of one point draws nothing
        args |= {"marker": "o", "markersize": 4}
    g = sns.relplot(**(args | kw))
    if len(x) == 1:
        g.set(xticks=x)  # that one step, not ticks at fractions of a step around it
    panels = [k for k in ((args | kw).get("row"), facet) if k]
    if left_out and panels:  # a panel whose every value was left out keeps its place, empty
        finite_in = pd.Series(keep, given.index).groupby([given[k] for k in panels]).any()
        for panel in finite_in.index[~finite_in.to_numpy()]:
            ax = g.axes_dict[panel]
            ax.text(0.5, 0.5, "no finite value", transform=ax.transAxes, ha="center")
    if left_out:
        text = f"{left_out} of {len(keep)} values not finite (inf or NaN): not drawn"
        legend(g, {text: note(text)})
    return g


def against_distance(h: pd.DataFrame, f: Frames, **kw):
    """A per-run quantity against distance k, a row for initialisation and one for the end of
    training (``phase``), a column per ``f.col`` value, a line per ``f.hue`` value: the layout
    of the profiles read from the runs' tables. ``kw`` adds to ``over_training``'s arguments."""
    args = {
        "x": "k",
        "row": "phase",
        "row_order": [p for p in ("init", "end of training") if p in set(h.phase)],
        "col_wrap": None,
        "facet_kws": {"sharey": False, "sharex": False},
        "linewidth": 1.1,
    } | colours(f.hue, h)
    g = over_training(h, f, f.hue, f.col, **(args | kw))
    for key, ax in g.axes_dict.items():
        phase, value = key if f.col else (key, None)
        ax.set_title(f"{phase}, {panel(f.col, value)}" if f.col else phase)
    return g


def facet_axes(g, key):
    if key is None or key not in g.data.columns or not g.axes_dict:
        return [(None, ax) for ax in g.axes.flat]
    return list(g.axes_dict.items())


def label_every_panel(g, xlabel: str, ylabel: str) -> None:
    """Tick labels and axis labels on every panel: no panel borrows its neighbour's."""
    for ax in g.axes.flat:
        ax.tick_params(labelbottom=True, labelleft=True)
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel)


def titles(g, key: str | None) -> None:
    if key:
        for value, ax in facet_axes(g, key):
            ax.set_title(panel(key, value))


def legend(g, extra: dict[str, object]) -> None:
    """Seaborn's legend plus ``extra`` (label → handle): entries only for what occurred."""
    data = {}
    if g._legend is not None:
        texts = [t.get_text() for t in g._legend.texts]
        data = dict(zip(texts, g._legend.legend_handles, strict=False))
        g._legend.remove()
        g._legend = None
    data |= extra
    if data:
        g.add_legend(legend_data=data, label_order=list(data))


PNG_DPI = 200


def save(fig_or_grid, out: Path, name: str) -> list[Path]:
    if isinstance(fig_or_grid, sns.FacetGrid):  # room for every panel's tick labels
        fig_or_grid.tight_layout(h_pad=1.5, w_pad=1.0)
    fig = getattr(fig_or_grid, "figure", fig_or_grid)
    for legend in [*fig.legends, *(ax.get_legend() for ax in fig.axes)]:
        for text in legend.get_texts() if legend else []:  # "model.activation" → "activation"
            text.set_text(LABELS.get(text.get_text(), text.get_text()))
        if legend and legend.get_title().get_text():
            legend.get_title().set_text(label(legend.get_title().get_text()))
    paths = [out / f"{name}.png", out / f"{name}.pdf"]
    try:
        # Lay the figure out once, as savefig's bbox_inches="tight" does for the PNG (a pass
        # of Agg at the PNG's dpi), then freeze that layout and its tight box for both files:
        # each savefig would otherwise run the layout engine and find the box again.
        fig.set_dpi(PNG_DPI)
        fig.draw_without_rendering()
        box = fig.get_tightbbox(fig.canvas.get_renderer())
        box = box.padded(matplotlib.rcParams["savefig.pad_inches"])
        # No engine at all. None alone means the user's rc default (figure.autolayout,
        # constrained_layout.use), which would lay the figure out again (or refuse, with a
        # colorbar), and savefig sets None back after each file; "none" keeps a placeholder
        # that makes savefig lay the figure out again too.
        with matplotlib.rc_context(
            {"figure.autolayout": False, "figure.constrained_layout.use": False}
        ):
            fig.set_layout_engine(None)
            fig.savefig(paths[0], dpi=PNG_DPI, bbox_inches=box, metadata={"Software": None})
            pdf = {"CreationDate": None, "Producer": None}
            fig.savefig(paths[1], bbox_inches=box, metadata=pdf)
    finally:
        plt.close(fig)
    return paths


def sci(v: float) -> str:
    """0.14, 0.95, 470, 1.2e11: two significant digits."""
    if not np.isfinite(v):
        return "inf" if v > 0 else "n/a"
    if v == 0 or 0.01 <= abs(v) < 10:
        return f"{v:.2g}"
    if abs(v) < 10_000:
        return f"{float(f'{v:.2g}'):.0f}"
    exp = math.floor(math.log10(abs(v)))
    return f"{v / 10**exp:.2g}e{exp}"
