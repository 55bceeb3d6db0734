"""An experiment's ``expect:`` checks, evaluated on its tidy frames: one row per check.

Each check (``rnnlab.config.expect``) selects runs (``runs:``, matched like ``--where``),
evaluates its ``value`` per run from ``Frames.runs`` (params) and ``Frames.history`` (metrics:
``{m}`` the value at the run's last logged step, ``{m@N}`` at step N, nan if not logged),
reduces the values to one number and compares it with ``expect``. The history must hold the
metrics the checks name: load the frames with ``metrics=metrics_named(checks)``.

A claim is never passed on missing data: a check whose runs are not all finished or diverged,
or whose experiment has grid points without a run, fails with the reason ("no runs", "2 of 6
runs failed", …). A diverged run is data: its last values count, and SQLite's stand-in for
±inf (±1.8e308) is read back as ±inf.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass

import numpy as np
import pandas as pd

from rnnlab.config import Experiment
from rnnlab.config.expect import Check, Expression
from rnnlab.report.load import Frames, _same


@dataclass(frozen=True)
class Outcome:
    """One check's row of the table."""

    check: str
    claim: str
    source: str
    expected: str
    measured: str  # the reduced number, formatted; or why there is none
    ok: bool
    known: str | None = None  # the documented reason it does not reproduce
    reason: str = ""  # why it could not be measured ("no runs" …), else ""
    value: float = float("nan")

    @property
    def mark(self) -> str:
        return "✓" if self.ok else "✗ (known)" if self.known else "✗"

    @property
    def failed(self) -> bool:
        """An unexpected ✗: what makes ``rnnlab reproduce`` exit 1."""
        return not self.ok and not self.known


def metrics_named(checks: list[Check]) -> list[str]:
    """The metrics the checks' expressions read (params are in ``Frames.runs`` already)."""
    out: dict[str, None] = {}
    for c in checks:
        for expr in (c.expression, c.x_expression):
            for term in expr.terms if expr else ():
                if "/" in term.name:  # metric names are group/name; param keys are dotted
                    out[term.name] = None
    return list(out)


def evaluate(experiment: Experiment, f: Frames) -> list[Outcome]:
    """One :class:`Outcome` per check of ``experiment.expect``, in file order."""
    claim = experiment.reproduces.claim if experiment.reproduces else experiment.name
    source = experiment.reproduces.source if experiment.reproduces else ""
    return [_evaluate(c, f, claim, c.source or source) for c in experiment.expect]


def _evaluate(c: Check, f: Frames, claim: str, source: str) -> Outcome:
    def outcome(value: float, measured: str, reason: str = "") -> Outcome:
        ok = not reason and c.expectation.holds(value)
        return Outcome(c.check, claim, source, c.expect, measured, ok, c.known, reason, value)

    runs = f.runs
    for key, wanted in c.runs.items():
        wanted = wanted if isinstance(wanted, list) else [wanted]
        if key not in runs.columns:
            return outcome(np.nan, "—", "no runs")
        runs = runs[[any(_same(v, str(w)) for w in wanted) for v in runs[key]]]
    done = runs[runs.status.isin(["finished", "diverged"])]
    if done.empty:
        return outcome(np.nan, "—", "no runs")
    if len(done) < len(runs):
        bad = runs.status[~runs.status.isin(["finished", "diverged"])].value_counts()
        said = ", ".join(f"{n} {s}" for s, n in bad.items())
        return outcome(np.nan, "—", f"{said} of {len(runs)} runs")
    if f.missing:
        return outcome(np.nan, "—", f"{len(f.missing)} grid points have no run")
    values = per_run(c.expression, done, f.history)
    if c.reduce == "crossing":
        xs = per_run(c.x_expression, done, f.history)
        x, why = crossing(xs, values)
        return outcome(x, _number(x), why)
    if c.reduce == "fraction":
        true = (values == values) & (values != 0)
        share = float(true.mean())
        return outcome(share, f"{_number(share)} ({int(true.sum())} of {len(values)} runs)")
    reduced = float(getattr(np, c.reduce)(values))  # nan anywhere → nan: never passes
    return outcome(reduced, _number(reduced))


def per_run(expr: Expression, runs: pd.DataFrame, history: pd.DataFrame) -> np.ndarray:
    """The expression's value for each row of ``runs`` (float64, in row order)."""
    ids = list(runs.run_id)
    values = []
    for term in expr.terms:
        if "/" not in term.name:  # a param (metric names are group/name)
            column = runs[term.name] if term.name in runs.columns else [None] * len(ids)
            values.append(np.array(list(column), dtype=np.float64))  # None → nan
            continue
        h = history[history.key == term.name]
        if term.step is not None:
            h = h[h.step == term.step]
        last = h.sort_values("step", kind="stable").groupby("run_id").value.last(skipna=False)
        values.append(last.reindex(ids).to_numpy(dtype=np.float64))
    values = [np.where(np.abs(v) >= sys.float_info.max, np.sign(v) * np.inf, v) for v in values]
    return np.broadcast_to(expr.evaluate(values), (len(ids),)).astype(np.float64)


def crossing(xs: np.ndarray, ys: np.ndarray) -> tuple[float, str]:
    """(x where the median y per x first crosses zero, linearly interpolated, '') or
    (nan, why not). x with a non-finite median are left out."""
    frame = pd.DataFrame({"x": xs, "y": ys}).dropna(subset=["x"])
    medians = frame.groupby("x").y.agg(lambda y: np.median(y.to_numpy()))
    medians = medians[np.isfinite(medians)].sort_index()
    x, y = medians.index.to_numpy(dtype=np.float64), medians.to_numpy()
    for i in range(len(x)):
        if y[i] == 0:
            return float(x[i]), ""
        if i + 1 < len(x) and y[i] * y[i + 1] < 0:
            return float(x[i] + (x[i + 1] - x[i]) * (0 - y[i]) / (y[i + 1] - y[i])), ""
    if len(x) < 2:
        return np.nan, f"no crossing: {len(x)} x with a finite value"
    return np.nan, f"no crossing of zero for x in [{x[0]:.4g}, {x[-1]:.4g}]"


def _number(v: float) -> str:
    return "nan" if v != v else f"{v:.4g}"


# ---------------------------------------------------------------------- the table
HEAD = ["claim", "source", "expected", "measured", "✓/✗"]


def rows(outcomes: list[Outcome]) -> list[list[str]]:
    """The table's rows: the check is the claimed number; the note says why not measured or
    why it is known not to reproduce."""
    out = []
    for o in outcomes:
        measured = f"{o.measured} ({o.reason})" if o.reason else o.measured
        mark = f"{o.mark}: {o.known}" if o.known and not o.ok else o.mark
        out.append([o.check, o.source, o.expected, measured, mark])
    return out


def text_table(outcomes: list[Outcome], width: int = 44) -> str:
    """The table for a terminal: columns cut to ``width`` characters (the report has them
    whole)."""

    def cut(s: str) -> str:
        return s if len(s) <= width else s[: width - 1] + "…"

    lines = [HEAD, *([*map(cut, r[:-1]), r[-1]] for r in rows(outcomes))]
    widths = [max(len(r[i]) for r in lines) for i in range(len(HEAD))]
    return "\n".join(
        "  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in lines
    )
