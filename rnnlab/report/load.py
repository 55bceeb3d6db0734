"""Loading: an experiment's runs → the grid to draw → tidy DataFrames (see the package doc).

:func:`load_results` is the public entry (``rnnlab.load_results``): the frames the report
draws, for a notebook. This module and ``rnnlab.track`` are the only ones that read MLflow.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from dataclasses import dataclass, field, replace
from pathlib import Path

import pandas as pd

from rnnlab.config import ConfigError
from rnnlab.config.experiment import did_you_mean
from rnnlab.config.schema import KEY_OMITS_AT_DEFAULT
from rnnlab.measure import names
from rnnlab.track.mlflow import MlflowTracker

HISTORY_KEYS = [
    names.TRAIN_LOSS,
    names.EVAL_LOSS_RATIO,
    names.GRAD_NORM,
    names.GRAD_CLIPPED,
    names.SLOPE,
    names.W_HH_RADIUS,
    names.W_HH_SIGMA_MAX,
    names.THEORY_SLOPE,
    names.THEORY_DEPTH_SCALE,
    names.THEORY_Q_IN,
    names.THEORY_BIAS_VAR,
    names.LYAPUNOV_MAX,
    names.THEORY_Q_STAR,
    names.UNITS_Q_HAT,
    names.UNITS_SATURATED,
    names.UNITS_DEAD,
    names.JAC_LOG_SV_MAX,
    names.JAC_LOG_SV_MIN,
]
"""The metrics loaded into ``Frames.history``: those the figures plot over training."""


NOT_FACETS = {"seed", "run_id", "name", "status"}


NOT_COMPARED = {"train.ensemble", "train.device"}  # scheduling, not science: never "differs"


@dataclass
class Frames:
    """The runs of one experiment that a report draws, as tidy DataFrames.

    ``runs``: one row per grid point (its best run: finished or diverged over failed,
    then the newest):

      run_id, name            the MLflow run (name like ``adding-T100-tanh-orthogonal1-s0``)
      status                  finished | diverged | failed | killed | running
      diverged_step           the training step it diverged at (NaN if it did not)
      sweep, parent_id        the sweep run that logged it (name, id)
      every param             by its dotted config key (``task.seq_len``, ``model.gain``,
                              ``seed`` …), typed: int, float, bool, None or str
      final_loss_ratio        the last ``eval/loss_ratio`` (NaN if never probed)
      slope_init, slope_final ``grad_h/slope`` at the first and last probe

    ``history``: one row per (run, metric, step) of :data:`HISTORY_KEYS`, for the runs that
    finished or diverged: run_id, key (the metric's name), step, value. SQLite stores ±inf
    as ±1.8e308.

    ``profiles``: one row per (run, probe step, time step t) of every recorded gradient
    profile: run_id, step, t, k = L − t (the distance back from the last step), n_t =
    ‖∂L/∂h_t‖ (exact, ±inf and 0 included).

    ``swept`` lists the params that vary across ``runs``; ``others`` the experiment's runs
    not drawn (run_id, name, status, sweep, differs: the settings in which each differs);
    ``missing`` the names of grid points without a run yet.
    """

    experiment: str
    runs: pd.DataFrame
    history: pd.DataFrame
    profiles: pd.DataFrame
    swept: list[str]
    parent_run_id: str | None = None  # the latest sweep run that logged a drawn run
    selection: str = "every run"  # what was drawn, in words ("the grid of x.yaml: …")
    others: pd.DataFrame = field(default_factory=pd.DataFrame)  # listed, not drawn
    missing: list[str] = field(default_factory=list)  # grid points without a run yet
    experiment_id: str | None = None  # the MLflow experiment's id
    tables: dict[str, pd.DataFrame] = field(default_factory=dict)
    """Each stored per-step table (``names.TABLES``) over the drawn runs, run_id in front:
    ``jacobian``: run_id, step, k, log_sv_max, log_sv_min; ``grad_x``: run_id, step, t, k,
    n_t = (1/B) Σ_b ‖∂L_b/∂x_t‖; ``grad_c`` (LSTM): the same columns for ‖∂L_b/∂c_t‖. Absent:
    no run stored it."""

    @property
    def hue(self) -> str | None:
        order = [UNIT, "model.cell", "model.activation", "model.init", "model.gain"]
        order.append("task.seq_len")
        return _pick(self.swept, order)

    @property
    def col(self) -> str | None:
        order = ["task.seq_len", "model.gain", "model.init", "model.activation", "model.cell"]
        return _pick([k for k in self.swept if k != self.hue], [*order, "train.lr"])

    @property
    def drawn(self) -> pd.DataFrame:
        return self.runs[self.runs.status.isin(["finished", "diverged"])]

    def of_cell(self, cell: str) -> Frames:
        """These frames restricted to the runs of one ``model.cell`` (the same frames when no
        other cell is among them), ``swept`` recomputed: a figure of what only that cell
        measures facets by what still varies."""
        if "model.cell" not in self.runs.columns or set(self.runs["model.cell"]) <= {cell}:
            return self
        runs = self.runs[self.runs["model.cell"] == cell]
        ids = set(runs.run_id)

        def keep(frame: pd.DataFrame) -> pd.DataFrame:
            return frame[frame.run_id.isin(ids)] if "run_id" in frame.columns else frame

        swept = [k for k in self.swept if runs[k].astype(str).nunique() > 1]
        return replace(
            self,
            runs=runs,
            history=keep(self.history),
            profiles=keep(self.profiles),
            swept=swept,
            tables={name: keep(t) for name, t in self.tables.items()},
        )


UNIT = "unit"
"""The column naming each run's recurrence where an experiment varies both ``model.cell`` and
the Elman cell's ``model.activation``: the activation for the Elman cell, else the cell."""


def _units(runs: pd.DataFrame, swept: list[str]) -> tuple[pd.DataFrame, list[str]]:
    """Where the cell and the Elman runs' activation both vary, the figures' hue is ``UNIT``
    (tanh, relu, …, lstm, gru) in place of the two, so no line pools an Elman tanh run with a
    relu one."""
    if not {"model.cell", "model.activation"} <= set(swept):
        return runs, swept
    elman = runs["model.cell"] == "elman"
    if runs.loc[elman, "model.activation"].nunique() <= 1:
        return runs, swept
    runs = runs.assign(**{UNIT: runs["model.activation"].where(elman, runs["model.cell"])})
    return runs, [UNIT] + [k for k in swept if k not in ("model.cell", "model.activation")]


def _pick(keys: list[str], order: list[str]) -> str | None:
    for k in order:
        if k in keys:
            return k
    rest = [k for k in keys if k not in NOT_FACETS]
    return rest[0] if rest else None


def experiments(tracking_uri: str) -> list[str]:
    """The names of the store's experiments; ConfigError when it has none."""
    found = list(MlflowTracker(tracking_uri).experiments())
    if not found:
        raise ConfigError([f"no experiments in {tracking_uri}; run `make sweep` first"])
    return found


def load_results(
    experiment: str,
    tracking_uri: str | None = None,
    *,
    grid: dict[str, str] | None = None,
    where: list[str] = (),
    all_runs: bool = False,
    source: str | None = None,
    metrics: list[str] = (),
) -> Frames:
    """The tidy frames of an experiment's runs, as the report draws them (see
    :class:`Frames` for the columns): by default the grid of its latest sweep.

    Args:
        experiment: the experiment's name (the ``name:`` of its file).
        tracking_uri: the MLflow store; None: $MLFLOW_TRACKING_URI, else results/mlflow.db.
        grid, where, all_runs, source, metrics: which runs and metrics, as for :func:`load`.
    Raises:
        ConfigError: no store there (it is never created), an empty store, an unknown or a
            deleted experiment, no rnnlab runs in it, a malformed ``where``; ``str(error)``
            says which in one line.

    In a notebook::

        import rnnlab
        from rnnlab.measure import names

        r = rnnlab.load_results("vanishing")
        r.runs.groupby("model.activation").slope_init.median()  # one row per activation
        curves = r.history[r.history.key == names.EVAL_LOSS_RATIO].merge(r.runs, on="run_id")
        r.profiles.merge(r.runs[["run_id", "model.activation"]], on="run_id")  # n_t by k
    """
    tracker = MlflowTracker(tracking_uri)
    tracker.check(create=False)
    experiments(tracker.uri)  # an empty store, said as such
    return load(tracker.uri, experiment, grid, where, all_runs, source, metrics)


def parse_where(items: list[str]) -> dict[str, list[str]]:
    """``["model.activation=tanh,relu", "task.seq_len=100"]`` → {key: accepted values}."""
    out: dict[str, list[str]] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip() or not value.strip():
            raise ConfigError(
                [f"--where {item!r}: expected key=value[,value…], e.g. task.seq_len=100"]
            )
        out.setdefault(key.strip(), []).extend(v.strip() for v in value.split(","))
    return out


def _matches(row: dict, where: dict[str, list[str]]) -> bool:
    for key, values in where.items():
        if key not in row or not any(_same(row[key], v) for v in values):
            return False
    return True


def _same(value, text: str) -> bool:
    """Does a run's param (as the frame holds it) equal a wanted value written as text? A null
    param (``train.clip_norm: null``) reads back as None or, in a float column, NaN: configs
    refuse NaN, so NaN here always means null."""
    if value is None or (isinstance(value, float) and value != value):
        return text in ("None", "null", "~", "")
    return str(value) == text or _typed(str(value)) == _typed(text)


def load(
    tracking_uri: str,
    experiment: str,
    grid: dict[str, str] | None = None,
    where: list[str] = (),
    all_runs: bool = False,
    source: str | None = None,
    metrics: list[str] = (),
) -> Frames:
    """The tidy frames of the runs to draw in one experiment.

    Args:
        grid: run_key → name of the grid to draw (an experiment file's current grid); None:
            the latest sweep's grid.
        where: ``key=value[,value]`` filters on params (and ``status``, ``name``); alone they
            select among every run, with a grid they narrow it.
        all_runs: draw every run in the experiment.
        source: how the grid was chosen, in words (e.g. "the grid of experiments/x.yaml").
        metrics: more metrics to load into ``history`` beside :data:`HISTORY_KEYS` (the
            ones an experiment's ``expect:`` checks name).
    Raises:
        ConfigError: no such experiment (or a deleted one), no rnnlab runs, or a malformed
            ``where``.
    """
    os.environ.setdefault(
        "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false"
    )  # one bar per file otherwise
    filters = parse_where(list(where))
    tracker = MlflowTracker(tracking_uri)
    client = tracker.client
    exp = tracker.check_experiment(experiment)  # refuses a deleted one
    if exp is None:
        known = ", ".join(experiments(tracking_uri)) or "none"
        raise ConfigError(
            [f"no experiment {experiment!r} in {tracking_uri} (experiments: {known})"]
        )
    all_found, token = [], None
    while True:
        page = client.search_runs([exp.experiment_id], max_results=1000, page_token=token)
        all_found += list(page)
        token = page.token
        if not token:
            break
    points = [r for r in all_found if names.TAG_RUN_KEY in r.data.tags]
    if not points:
        raise ConfigError(
            [f"experiment {experiment!r} has no rnnlab runs yet; run `rnnlab sweep` first"]
        )
    parents = sorted(
        (r for r in all_found if r.data.tags.get(names.TAG_ROLE) == names.ROLE_SWEEP),
        key=lambda r: r.info.start_time,
    )
    parent_names = {r.info.run_id: r.info.run_name for r in parents}
    rank = {"finished": 0, "diverged": 0, "failed": 1, "killed": 1, "running": 2}
    latest: dict[str, object] = {}
    for r in sorted(
        points,
        key=lambda r: (-rank.get(r.data.tags.get(names.TAG_STATUS, ""), 3), r.info.start_time),
    ):
        latest[r.data.tags[names.TAG_RUN_KEY]] = r  # best status wins, then the newest
    rows = {}
    for key, r in latest.items():
        tags = r.data.tags
        row = {
            "run_id": r.info.run_id,
            "name": r.info.run_name,
            "status": tags.get(names.TAG_STATUS, "?"),
            "diverged_step": float(tags.get(names.TAG_DIVERGED_STEP, "nan")),
            "sweep": parent_names.get(tags.get(names.MLFLOW_PARENT_RUN), "rnnlab run"),
            "parent_id": tags.get(names.MLFLOW_PARENT_RUN),
        }
        row |= {k: _typed(v) for k, v in r.data.params.items()}
        # A run stored before an option existed computed what its default computes (and
        # kept its run_key): it has that default.
        row |= {k: d for k, d in KEY_OMITS_AT_DEFAULT.items() if k not in row}
        row["final_loss_ratio"] = r.data.metrics.get(names.EVAL_LOSS_RATIO, math.nan)
        rows[key] = row

    # which runs to draw: a grid (a file's, else the latest sweep's), all, or a filter
    missing: list[str] = []
    if grid is None and not all_runs and not filters:
        grid, source = _latest_grid(client, parents)
    if grid is not None:
        chosen = [k for k in grid if k in rows]
        missing = [name for k, name in grid.items() if k not in rows]
        selection = f"{source or 'the given grid'}: {len(grid)} grid points"
        if missing:
            selection += f", {len(missing)} without a run yet"
    else:
        chosen = list(rows)
        selection = (
            "every run in the experiment (--all)"
            if all_runs
            else "every run in the experiment (no sweep has run yet)"
            if not filters
            else "runs matching --where"
        )
    if filters:
        known = sorted({key for row in rows.values() for key in row})
        for key in filters:  # a misspelt key would select nothing, silently
            if key not in known:
                raise ConfigError(
                    [
                        f"--where {key}=…: no run of experiment {experiment!r} has {key!r}"
                        f"{did_you_mean(key, known)}"
                    ]
                )
        chosen = [k for k in chosen if _matches(rows[k], filters)]
        selection += " where " + ", ".join(f"{k}={'|'.join(v)}" for k, v in filters.items())
    chosen_set = set(chosen)
    if not chosen:
        runs = pd.DataFrame(columns=["run_id", "name", "status", "diverged_step"])
    else:
        runs = pd.DataFrame([rows[k] for k in chosen])
    others = _describe_others(pd.DataFrame([rows[k] for k in rows if k not in chosen_set]), runs)

    history, profiles, tables = [], [], {}
    with tempfile.TemporaryDirectory() as tmp:
        for row in runs.itertuples():
            if row.status not in ("finished", "diverged"):
                continue
            rid = row.run_id
            for key in dict.fromkeys([*HISTORY_KEYS, *metrics]):
                for m in client.get_metric_history(rid, key):
                    history.append((rid, key, m.step, m.value))
            stored = {a.path for a in client.list_artifacts(rid)}
            for name in names.TABLES:
                if f"{name}.parquet" in stored:
                    frame = pd.read_parquet(client.download_artifacts(rid, f"{name}.parquet", tmp))
                    frame.insert(0, "run_id", rid)
                    tables.setdefault(name, []).append(frame)
            try:
                path = client.download_artifacts(rid, "profiles.parquet", tmp)
            except Exception:  # a run without profiles (none recorded) is still a row in `runs`
                continue
            frame = pd.read_parquet(path)
            frame.insert(0, "run_id", rid)
            profiles.append(frame)
    history = pd.DataFrame(history, columns=["run_id", "key", "step", "value"])
    profiles = (
        pd.concat(profiles, ignore_index=True)
        if profiles
        else pd.DataFrame(columns=["run_id", "step", "t", "k", "n_t"])
    )
    slopes = history[history.key == names.SLOPE].sort_values("step")
    first = slopes.groupby("run_id").value.first(skipna=False).rename("slope_init")
    last = slopes.groupby("run_id").value.last(skipna=False).rename("slope_final")  # NaN stays
    runs = runs.merge(first, on="run_id", how="left").merge(last, on="run_id", how="left")
    params = [c for c in runs.columns if "." in c or c == "seed"]
    swept = [c for c in params if runs[c].astype(str).nunique() > 1]
    runs, swept = _units(runs, swept)
    drawn = runs[runs.status.isin(["finished", "diverged"])]
    ids = set(drawn.parent_id) if "parent_id" in drawn.columns else set()
    mine = [r.info.run_id for r in parents if r.info.run_id in ids]  # the drawn grid's sweeps
    return Frames(
        experiment,
        runs,
        history,
        profiles,
        swept,
        mine[-1] if mine else None,  # the latest sweep that logged a drawn run
        selection,
        others,
        missing,
        exp.experiment_id,
        {name: pd.concat(frames, ignore_index=True) for name, frames in tables.items()},
    )


def _latest_grid(client, parents) -> tuple[dict[str, str] | None, str | None]:
    """run_key → name of the latest sweep's grid (None when the experiment has no sweep)."""
    from rnnlab.config import load_experiment, run_name

    for parent in reversed(parents):
        rid, name = parent.info.run_id, parent.info.run_name
        with tempfile.TemporaryDirectory() as tmp:
            try:
                grid = json.loads(
                    Path(client.download_artifacts(rid, "grid.json", tmp)).read_text()
                )
                return grid, f"the grid of the latest sweep ({name})"
            except Exception:  # a sweep logged before grid.json: expand its experiment.yaml
                pass
            try:
                path = client.download_artifacts(rid, "experiment.yaml", tmp)
                experiment, runs = load_experiment(path)
            except Exception:
                continue
            swept = experiment.swept_keys()
            return (
                {r.run_key: run_name(r, swept) for r in runs},
                f"the grid of the latest sweep ({name})",
            )
    return None, None


def _describe_others(others: pd.DataFrame, drawn: pd.DataFrame) -> pd.DataFrame:
    """The runs not drawn, each with the settings in which it differs from the drawn grid."""
    cols = ["run_id", "name", "status", "sweep", "differs"]
    if others.empty:
        return pd.DataFrame(columns=cols)
    params = [c for c in others.columns if ("." in c or c == "seed") and c not in NOT_COMPARED]
    values = {c: set(map(_text, drawn[c])) if c in drawn.columns else set() for c in params}
    differs = []
    for _, r in others.iterrows():
        diff = [f"{c}={r[c]}" for c in params if _text(r[c]) not in values[c]]
        differs.append(", ".join(diff) if diff else "same settings (another grid)")
    return others.assign(differs=differs)[cols].sort_values(["differs", "name"])


def _text(value) -> str:
    """A param as text, with None and NaN (a param a run lacks) alike."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "None"
    return str(value)


def _typed(value: str):
    for cast in (int, float):
        try:
            return cast(value)
        except ValueError:
            pass
    return {"None": None, "True": True, "False": False}.get(value, value)
