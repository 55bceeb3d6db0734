"""Experiment files: YAML → validated experiment → grid of fully resolved run configs.

An experiment file is a small diff over the defaults (``rnnlab.config.schema`` and each
task's file in ``rnnlab.tasks``), plus a ``sweep``::

    name: vanishing
    task:  {name: adding, seq_len: 100, variant: halves}
    model: {hidden_size: 64, activation: tanh, init: orthogonal, gain: 1.0}
    sweep:
      task.seq_len: [10, 50, 200]
      model.activation: [tanh, relu]

Every grid point becomes a :class:`RunConfig` with a stable ``run_key``. All bad input
(YAML syntax, unknown keys, wrong types, bad values, sweeps over keys that do not exist)
raises :class:`ConfigError` *before* any work starts, naming the file, the line, the dotted
key and the allowed values.
"""

from __future__ import annotations

import difflib
import itertools
import json
import math
import os
import re
from pathlib import Path
from typing import Any

import yaml
from pydantic import Field, ValidationError, field_validator
from pydantic_core import PydanticCustomError

from rnnlab.config.expect import OWN_MESSAGES as EXPECT_MESSAGES
from rnnlab.config.expect import Check, Reproduces, check_problems
from rnnlab.config.safeyaml import YAMLProblem, parse, read_yaml
from rnnlab.config.schema import (
    DEFAULT_TASK,
    TASK_CONFIGS,
    ResourcesConfig,
    RunConfig,
    leaf_keys,
    run_name,
    sections,
)
from rnnlab.options import Options

SweepAxes = dict[str, list[Any]]


NAME = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9._ -]*[A-Za-z0-9._-])?")
"""A valid experiment name (see ``Experiment.name``)."""


class Experiment(RunConfig):
    """An experiment file: a base run config plus a sweep over some of its keys."""

    name: str = "rnnlab"
    """MLflow experiment name: letters, digits, '.', '_', '-' and inner spaces, at most 100
    characters (it names the artifact folder, so never a path)."""
    description: str = Field("", max_length=10_000)
    """The question this experiment answers (shown in the MLflow UI)."""

    @field_validator("sweep", mode="before")
    @classmethod
    def _sweep(cls, v: Any) -> Any:
        """One clear message per malformed sweep (the union would report each member)."""
        if isinstance(v, list) and not v:
            raise PydanticCustomError(
                "sweep_empty", "an empty list; give mappings of dotted keys to value lists"
            )
        for axes in v if isinstance(v, list) else [v]:
            if not isinstance(axes, dict):
                raise PydanticCustomError(
                    "sweep_shape",
                    "expected a mapping of dotted keys to lists of values (or a list of such "
                    "mappings), got {kind}",
                    {"kind": _kind(axes)},
                )
            for key, values in axes.items():
                if not isinstance(values, list):
                    raise PydanticCustomError(
                        "sweep_values",
                        "{key}: expected a list of values, got {kind}; for one value write "
                        "[{value}], or set {key} outside the sweep",
                        {"key": key, "kind": _kind(values), "value": json.dumps(values)},
                    )
        return v

    @field_validator("name", mode="before")
    @classmethod
    def _name(cls, v: Any) -> Any:
        if isinstance(v, str) and not (len(v) <= 100 and NAME.fullmatch(v)):
            shown = v if len(v) <= 40 else v[:37] + "..."
            raise PydanticCustomError(
                "experiment_name",
                "{name} is not a valid experiment name: use 1–100 letters, digits, '.', '_', "
                "'-' or inner spaces, starting with a letter or digit",
                {"name": repr(shown)},
            )
        return v

    sweep: SweepAxes | list[SweepAxes] = Field(default_factory=dict)
    """Dotted keys → lists of values; the grid is their Cartesian product. A list of such
    mappings gives the union of their grids."""
    resources: ResourcesConfig = Field(default_factory=ResourcesConfig)
    """Per-grid-point resources for the Ray executor."""
    reproduces: Reproduces | None = None
    """The published claim this file reproduces (``rnnlab.config.expect``); not part of run_key."""
    expect: list[Check] = Field(default_factory=list)
    """The claim's numbers as checks on the stored metrics, evaluated by ``rnnlab reproduce``
    (``rnnlab.config.expect``); not part of run_key."""

    def base(self) -> RunConfig:
        return RunConfig(**{k: getattr(self, k) for k in RunConfig.model_fields})

    def sweep_axes(self) -> list[SweepAxes]:
        return self.sweep if isinstance(self.sweep, list) else [self.sweep]

    def swept_keys(self) -> list[str]:
        """Keys that take more than one value somewhere in the sweep, in file order."""
        keys: dict[str, set[str]] = {}
        for axes in self.sweep_axes():
            for k, vs in axes.items():
                keys.setdefault(k, set()).update(json.dumps(v, sort_keys=True) for v in vs)
        many = {k for k, vs in keys.items() if len(vs) > 1}
        if len(self.sweep_axes()) > 1:  # a union of grids varies whatever differs between them
            many |= set(keys)
        return [k for k in keys if k in many]


# ------------------------------------------------------------------------- errors
class ConfigError(ValueError):
    """Bad experiment input. ``str(err)`` is the user-facing message, one problem per line."""

    def __init__(self, problems: list[str]):
        self.problems = problems
        super().__init__("\n".join(problems))


# ------------------------------------------------------------------------ loading
MAX_GRID = 10_000
"""Grid points a sweep expands without ``--yes``…"""
MAX_GRID_YES = 100_000
"""…and with it (each point is a validated config: ~5 KB and ~50 µs)."""


def load_experiment(
    path: str | Path, overrides: list[str] = (), max_points: int = MAX_GRID
) -> tuple[Experiment, list[RunConfig]]:
    """Read, validate and expand an experiment file.

    Args:
        path: the YAML file.
        overrides: ``dotted.key=value`` strings (values parsed as YAML) applied after the
            file. Overriding a swept key pins it (removes that axis); ``sweep.KEY=[...]``
            sets a sweep axis.
        max_points: the largest grid to expand (its size is computed first); above it the
            error asks for ``--yes`` (``MAX_GRID_YES``).
    Returns:
        The experiment and its grid of run configs (deduplicated by run_key, in grid order).
    Raises:
        ConfigError: with every problem found, before anything is run or written.
    """
    path = Path(path)
    try:
        raw, node = read_yaml(path)
    except YAMLProblem as e:
        raise ConfigError([str(e)]) from None
    lines = _line_numbers(node)
    if raw is None and not overrides:
        raise ConfigError(
            [f"{path}: the file has no settings; an experiment needs at least a name"]
        )
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(
            [f"{path}: an experiment file must be a mapping of keys, got {_kind(raw)}"]
        )
    raw, from_override = _apply_overrides(raw, overrides, path)

    def where(loc: tuple) -> str:
        for n in range(len(loc), 0, -1):
            if loc[:n] in from_override:
                return f"override {from_override[loc[:n]]!r}"
        for source, item in from_override.items():  # an override that set keys below loc
            if source[: len(loc)] == loc:
                return f"override {item!r}"
        for n in range(len(loc), 0, -1):
            if loc[:n] in lines:
                return f"{path}:{lines[loc[:n]]}"
        return str(path)

    try:
        experiment = Experiment.model_validate(raw)
    except ValidationError as e:  # report the sweep's unknown keys in the same pass
        problems = [f"{where(loc)}: {msg}" for loc, msg in _explain(e)]
        raise ConfigError(problems + _unknown_sweep_keys(raw.get("sweep"), where)) from None
    n = grid_size(experiment)
    if n > max_points:
        more = (
            f"; pass --yes to expand it (at most {MAX_GRID_YES:,})"
            if max_points < MAX_GRID_YES
            else ""
        )
        raise ConfigError(
            [f"{path}: the sweep has {n:,} grid points, more than {max_points:,}{more}"]
        )
    grid = _expand(experiment, raw, where)
    params: dict[str, set[type]] = {}
    for run in grid:
        for key, value in run.params().items():
            params.setdefault(key, set()).add(type(value))
    cells = {run.model.cell for run in grid}
    unknown = check_problems(experiment.expect, params, cells)
    if unknown:
        raise ConfigError([f"{where(loc)}: {'.'.join(map(str, loc))}: {m}" for loc, m in unknown])
    _check_memory(grid, path, experiment.swept_keys())
    return experiment, grid


def grid_size(experiment: Experiment) -> int:
    """Points in the sweep before deduplication, computed without expanding it."""
    return sum(math.prod(len(v) for v in axes.values()) for axes in experiment.sweep_axes())


def machine_memory() -> int:
    """Physical memory of this machine in bytes (0 if unknown)."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return 0


def _check_memory(grid: list[RunConfig], path, swept: list[str] = ()) -> None:
    """Refuse a run whose estimated peak (``RunConfig.memory``) exceeds 80 % of this
    machine's memory, before it fills it and fails as a FAILED run minutes later."""
    total = machine_memory()
    if not total:
        return
    worst = max(grid, key=lambda r: sum(r.memory().values()), default=None)
    if worst is None:
        return
    parts = worst.memory()
    need = sum(parts.values())
    if need <= 0.8 * total:
        return
    culprit = max(parts, key=parts.get)
    where = "" if len(grid) == 1 else f" (grid point {run_name(worst, swept)})"
    raise ConfigError(
        [
            f"{path}: a run needs about {_bytes(need)} of memory{where}, mostly {culprit}: "
            f"{_bytes(parts[culprit])}; this machine has {_bytes(total)}"
        ]
    )


def _bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB", "PiB"):
        if n < 1024 or unit == "PiB":
            return f"{n:.3g} {unit}"
        n /= 1024
    return f"{n:.3g} PiB"


# ---------------------------------------------------------------------- internals
def _kind(v: Any) -> str:
    return {list: "a list", str: "a string", int: "a number", float: "a number"}.get(
        type(v), type(v).__name__
    )


def _line_numbers(node: yaml.Node | None, prefix: tuple = ()) -> dict[tuple, int]:
    """Map each key path in the YAML document to its 1-based line number."""
    out: dict[tuple, int] = {}
    if isinstance(node, yaml.MappingNode):
        for knode, vnode in node.value:
            key = (*prefix, knode.value)
            out[key] = knode.start_mark.line + 1
            out.update(_line_numbers(vnode, key))
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            out[(*prefix, i)] = item.start_mark.line + 1
            out.update(_line_numbers(item, (*prefix, i)))
    return out


def _apply_overrides(raw: dict, overrides, path) -> tuple[dict, dict[tuple, str]]:
    raw = json.loads(json.dumps(raw, default=str))  # deep copy
    sources: dict[tuple, str] = {}
    problems = []
    for item in overrides:
        key, sep, text = item.partition("=")
        key = key.strip()
        if not sep or not key or any(not p for p in key.split(".")):
            problems.append(f"override {item!r}: expected dotted.key=value, e.g. train.steps=50")
            continue
        try:
            value, _ = parse(text, f"override {item!r}")
        except YAMLProblem as e:
            problems.append(str(e))
            continue
        parts = key.split(".")
        if parts[0] == "sweep" and len(parts) > 1:
            axis = ".".join(parts[1:])
            sweeps = raw.get("sweep") or {}
            for axes in sweeps if isinstance(sweeps, list) else [sweeps]:
                if isinstance(axes, dict):
                    axes[axis] = value
            if not sweeps:
                sweeps = {axis: value}
            raw["sweep"] = sweeps
            sources[("sweep", axis)] = item
            continue
        node = raw
        for p in parts[:-1]:
            if not isinstance(node.get(p), dict):
                node[p] = {}
            node = node[p]
        node[parts[-1]] = value
        sources[tuple(parts)] = item
        sweeps = raw.get("sweep")
        for axes in sweeps if isinstance(sweeps, list) else [sweeps]:
            if isinstance(axes, dict):
                axes.pop(key, None)  # a pinned key is no longer swept
    if problems:
        raise ConfigError(problems)
    return raw, sources


def _explain(err: ValidationError) -> list[tuple[tuple, str]]:
    """Turn pydantic errors into (yaml path, readable message) pairs."""
    out = []
    for e in err.errors():
        loc, section = tuple(e["loc"]), None
        if len(loc) > 1 and loc[0] == "task" and loc[1] in TASK_CONFIGS:
            section = TASK_CONFIGS[loc[1]]
            loc = (loc[0], *loc[2:])  # drop the union tag pydantic inserts
        if len(loc) > 1 and loc[0] == "sweep" and not isinstance(loc[1], int) and "[" in loc[1]:
            loc = (loc[0], *loc[2:])  # drop the dict-or-list union member name
        dotted = ".".join(str(p) for p in loc) or "(top level)"
        kind = e["type"]
        if kind == "extra_forbidden":
            allowed = list(_section(loc[:-1], section).model_fields)
            msg = (
                f"{dotted}: unknown key{did_you_mean(str(loc[-1]), allowed)}; allowed keys: "
                + ", ".join(allowed)
            )
        elif kind == "literal_error":
            choices = e["ctx"]["expected"].replace("'", "").replace(" or ", ", ")
            hint = did_you_mean(str(e["input"]), choices.split(", "))
            msg = f"{dotted}: {e['input']!r} is not allowed{hint}; expected one of: {choices}"
        elif kind == "union_tag_invalid":
            names = ", ".join(TASK_CONFIGS)
            msg = f"{dotted}.name: unknown task {e['ctx']['tag']!r}; expected one of: {names}"
        else:
            got = "" if kind in OWN_MESSAGES else f" (got {_short(e['input'])})"
            msg = f"{dotted}: {e['msg'][0].lower()}{e['msg'][1:]}{got}"
        out.append((loc, msg))
    # A bad sweep triggers one error per union member; keep each message once.
    return list(dict.fromkeys(out))


SYNONYMS = {
    "learning_rate": "lr",
    "lr_rate": "lr",
    "epochs": "steps",
    "iterations": "steps",
    "n_steps": "steps",
    "num_steps": "steps",
    "batch": "batch_size",
    "bs": "batch_size",
    "hidden": "hidden_size",
    "units": "hidden_size",
    "num_units": "hidden_size",
    "n_hidden": "hidden_size",
    "length": "seq_len",
    "sequence_length": "seq_len",
    "T": "seq_len",
    "nonlinearity": "activation",
    "act": "activation",
    "sigma_w": "gain",
    "scale": "gain",
    "initialization": "init",
    "initializer": "init",
    "optim": "optimizer",
    "clip": "clip_norm",
    "grad_clip": "clip_norm",
    "max_grad_norm": "clip_norm",
    "precision": "dtype",
}
"""Names other tools use for rnnlab's keys, for the did-you-mean of an unknown key."""


OWN_MESSAGES = (
    "sweep_empty",
    "sweep_shape",
    "sweep_values",
    "experiment_name",
    *EXPECT_MESSAGES,
)
"""Errors whose message already says what was wrong with the value."""


def _short(value: Any, limit: int = 80) -> str:
    """repr of a bad value, cut to ``limit`` characters: a message is one readable line."""
    text = repr(value)
    return text if len(text) <= limit else f"{text[: limit - 12]}… ({len(text):,} chars)"


def did_you_mean(word: str, allowed: list[str]) -> str:
    """' (did you mean 'x'?)' for a near miss or a common synonym, else ''."""
    synonym = SYNONYMS.get(word) or SYNONYMS.get(word.lower())
    if synonym in allowed:
        return f" (did you mean {synonym!r}?)"
    close = difflib.get_close_matches(word, allowed, n=1) or difflib.get_close_matches(
        word.lower(), allowed, n=1
    )
    return f" (did you mean {close[0]!r}?)" if close else ""


def _section(loc: tuple, task_section: type[Options] | None) -> type[Options]:
    """The option model that the keys at ``loc`` belong to."""
    if not loc:
        return Experiment
    if loc[0] == "task":
        return task_section or TASK_CONFIGS[DEFAULT_TASK]
    if loc[0] in ("expect", "reproduces"):
        return Check if loc[0] == "expect" else Reproduces
    return sections(Experiment).get(loc[0], [Experiment])[0]


def _unknown_sweep_keys(sweep: Any, where) -> list[str]:
    """Sweep keys that do not exist, from a raw (possibly invalid) sweep; for one-pass errors."""
    try:
        experiment = Experiment.model_construct(sweep=sweep)
        _expand_keys(experiment, where)
    except ConfigError as e:
        return e.problems
    except Exception:  # a malformed sweep: its own error is already reported
        return []
    return []


def _expand_keys(experiment: Experiment, where) -> None:
    valid = set(leaf_keys())
    problems = []
    for i, axes in enumerate(experiment.sweep_axes()):
        if not isinstance(axes, dict):
            return
        prefix = ("sweep", i) if isinstance(experiment.sweep, list) else ("sweep",)
        for key in axes:
            if key not in valid:
                section, _, leaf = key.rpartition(".")
                near = [k.rpartition(".")[2] for k in valid if k.rpartition(".")[0] == section]
                hint = did_you_mean(leaf, near)
                hint = hint.replace("'", f"'{section}.", 1) if hint and section else hint
                hint = hint or did_you_mean(key, sorted(valid))
                problems.append(
                    f"{where((*prefix, key))}: sweep over unknown key {key!r}{hint}; "
                    f"sweepable keys: {', '.join(leaf_keys())}"
                )
    if problems:
        raise ConfigError(problems)


def _expand(experiment: Experiment, raw: dict, where) -> list[RunConfig]:
    """Cartesian product of each sweep mapping, union over mappings; every point validated."""
    _expand_keys(experiment, where)
    problems: list[str] = []
    points: list[tuple[dict, dict, tuple]] = []
    base = {k: v for k, v in raw.items() if k in RunConfig.model_fields}
    for i, axes in enumerate(experiment.sweep_axes()):
        prefix = ("sweep", i) if isinstance(experiment.sweep, list) else ("sweep",)
        for key, values in axes.items():
            loc = (*prefix, key)
            if not values:
                problems.append(f"{where(loc)}: sweep.{key}: empty list; give at least one value")
        if problems:
            continue
        keys = list(axes)
        for combo in itertools.product(*(axes[k] for k in keys)):
            point = json.loads(json.dumps(base))
            for key, value in zip(keys, combo, strict=True):
                node = point
                *parents, leaf = key.split(".")
                for p in parents:
                    node = node.setdefault(p, {})
                node[leaf] = value
            points.append((dict(zip(keys, combo, strict=True)), point, prefix))
    if problems:
        raise ConfigError(problems)
    grid: dict[str, RunConfig] = {}
    for values, point, prefix in points:
        try:
            run = RunConfig.model_validate(point)
        except ValidationError as e:
            for loc, msg in _explain(e):
                dotted = ".".join(map(str, loc))
                if dotted in values:  # one message per bad sweep value, not per grid point
                    detail = msg.removeprefix(f"{dotted}: ")
                    problems.append(
                        f"{where((*prefix, dotted))}: "
                        f"sweep value {dotted}={values[dotted]!r}: {detail}"
                    )
                else:  # a section's check (model.cell with model.activation): its keys only
                    related = {k: v for k, v in values.items() if k.startswith(f"{dotted}.")}
                    setting = ", ".join(f"{k}={v!r}" for k, v in (related or values).items())
                    problems.append(f"{where(loc)}: grid point ({setting}): {msg}")
            continue
        grid.setdefault(run.run_key, run)
    if problems:
        raise ConfigError(list(dict.fromkeys(problems)))
    return list(grid.values())
