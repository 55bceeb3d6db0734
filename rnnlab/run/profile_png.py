"""A run's profile.png: its gradient profile at init and at the end, shown inline by the UI.

Drawn by the worker that trained the run (``rnnlab.run.executors.base.work``), not by the
driver: the driver is the store's one writer, and drawing took 40 % of its time
(docs/performance.md). Every worker process pays the imports once, so this module takes
matplotlib's object API (no pyplot) and the (step, n_t) pairs as they come out of training
(no pandas): about 0.4 s of imports a worker instead of 1.8 s, made at its first figure or,
in a local worker, while it waits for its first job (``base.FIGURE_IMPORTS``); in ``_draw``,
where a failure is a warning, not a failed run.
"""

from __future__ import annotations

import io
import sys

import numpy as np


def profile_png(profiles: list[tuple[int, np.ndarray]], title: str) -> bytes | None:
    """The PNG of a run's first and last profile, from its (training step, n_t) pairs in step
    order; None without a profile. A figure that fails to draw is reported on stderr and left
    out: a figure is a view, and the run's numbers are stored without it."""
    if not profiles:
        return None
    try:
        return _draw(profiles[0], profiles[-1], title)
    except Exception as e:
        print(f"warning: {title}: profile.png not drawn ({type(e).__name__}: {e})", file=sys.stderr)
        return None


def _draw(first: tuple[int, np.ndarray], last: tuple[int, np.ndarray], title: str) -> bytes:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.ticker import LogFormatter

    fig = Figure(figsize=(4.0, 2.6))
    FigureCanvasAgg(fig)  # files only: never needs a display
    ax = fig.add_subplot()
    fig.subplots_adjust(left=0.19, right=0.97, bottom=0.17, top=0.9)  # fixed: layout engines
    # cost more than the drawing, once per run
    for (step, n), label, style in ((first, "init", "-"), (last, "end", "--")):
        n = np.asarray(n, dtype=np.float64)
        k = len(n) - np.arange(1, len(n) + 1)  # distance k = T − t for t = 1..T
        shown = (n > 0) & np.isfinite(n)  # underflow and overflow end the curve
        ax.plot(k[shown], n[shown], style, lw=1.3, label=f"{label} (step {step})")
    ax.set_yscale("log")
    # Plain-text labels: parsing mathtext (log tick labels included) costs 60 ms a figure, and
    # this one is drawn for every run.
    ax.yaxis.set_major_formatter(LogFormatter(labelOnlyBase=True))
    ax.set_xlabel("distance k = T − t")
    ax.set_ylabel("n = ‖∂L/∂h_t‖")
    ax.set_title(title, fontsize=8)
    ax.legend(fontsize=7)
    out = io.BytesIO()
    fig.savefig(out, dpi=110, format="png")
    return out.getvalue()
