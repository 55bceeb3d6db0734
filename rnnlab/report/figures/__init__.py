"""The report's figures, one module each: a new figure is one new file here.

A module registers its figure by decorating the function that draws it::

    from rnnlab.report.figures import figure
    from rnnlab.report import plotting as plot

    @figure(9, "What it shows, in one sentence: the caption under it in the report.")
    def my_figure(f: Frames, out: Path) -> list[Path] | None:
        ...  # reads only f's tidy frames (rnnlab.report.load)
        return plot.save(fig, out, "9_my_figure")  # PNG and PDF

The report (``rnnlab.report.document``) draws every registered figure in the order of its
number; one that returns None is left out of that report (a figure the sweep cannot show,
e.g. slope against gain without a gain axis). :func:`registered` imports every module of
this package, so no list of figures is kept by hand; a figure registered from a module
elsewhere, imported before the report is drawn, is drawn too.

The profile.png each run carries in MLflow is not a report figure: ``rnnlab.run.profile_png``.
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from rnnlab.report.load import Frames

Draw = Callable[["Frames", Path], "list[Path] | None"]


@dataclass(frozen=True)
class Figure:
    number: int
    """Its place in the report (and the prefix of its file names)."""
    caption: str
    draw: Draw
    """Draws into the folder ``out``; returns the files written (PNG first), or None."""
    elman_only: bool = False
    """It draws what only the Elman cell measures (W_hh, theory, units, Jacobian): given the
    Elman runs alone (``Frames.of_cell``), facets by what varies among them."""

    def render(self, f: Frames, out: Path) -> tuple[list[Path] | None, str]:
        """Draw it from ``f``; returns the files and the caption for this report."""
        if not self.elman_only:
            return self.draw(f, out), self.caption
        only = f.of_cell("elman")
        if only.drawn.empty:  # gated cells alone: nothing it could show
            return None, self.caption
        note = "" if only is f else " Elman runs only: gated cells do not measure it."
        return self.draw(only, out), self.caption + note


_REGISTRY: dict[int, Figure] = {}


def figure(number: int, caption: str, *, elman_only: bool = False) -> Callable[[Draw], Draw]:
    """Register the decorated function as the report's figure ``number`` (``elman_only``: it
    draws what only the Elman cell measures, see ``Figure.elman_only``)."""

    def register(draw: Draw) -> Draw:
        known = _REGISTRY.get(number)
        same = known is not None and (known.draw.__module__, known.draw.__qualname__) == (
            draw.__module__,
            draw.__qualname__,
        )
        if known is not None and not same:  # a module imported again replaces its own
            raise ValueError(
                f"figure {number} is registered twice: {known.draw.__module__}."
                f"{known.draw.__qualname__} and {draw.__module__}.{draw.__qualname__}"
            )
        _REGISTRY[number] = Figure(number, caption, draw, elman_only)
        return draw

    return register


def registered() -> list[Figure]:
    """Every figure of the report, in order (importing each module of this package first)."""
    for module in pkgutil.iter_modules(__path__):
        importlib.import_module(f"{__name__}.{module.name}")
    return sorted(_REGISTRY.values(), key=lambda fig: fig.number)
