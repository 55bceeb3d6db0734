"""Experiment files: YAML → validated experiment → grid of fully resolved run configs.

An experiment file is a small diff over the defaults below, plus a ``sweep``::

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

This module must stay free of torch/mlflow imports: ``rnnlab validate`` is instant. The
implementations behind the names (``tasks.TASKS``, ``rnn.ACTIVATIONS``, ``rnn.INITS``,
``train.OPTIMIZERS``) are checked against the ``Literal`` names here by the test suite.
"""

from __future__ import annotations

import difflib
import hashlib
import itertools
import json
import math
import os
import re
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Discriminator,
    Field,
    Tag,
    ValidationError,
    field_validator,
)
from pydantic_core import PydanticCustomError

from rnnlab.config.safeyaml import YAMLProblem, parse, read_yaml
from rnnlab.model import activations, inits

# Names of the registered components (see the module docstring for where each lives).
TaskName = Literal["adding", "copy", "temporal_order", "permutation"]
ActivationName = Literal.__getitem__(activations.NAMES)  # rnnlab.model.activations' table
InitName = Literal.__getitem__(inits.NAMES)  # rnnlab.model.inits' table
OptimizerName = Literal["sgd", "adam", "rmsprop"]


class _Section(BaseModel):
    """Strict, immutable config section: unknown keys, wrong types and non-finite numbers are
    errors."""

    model_config = ConfigDict(
        extra="forbid", frozen=True, use_attribute_docstrings=True, allow_inf_nan=False
    )


def _number(value: Any) -> Any:
    """YAML reads true/false/on/off as booleans; a boolean is never a number here."""
    if isinstance(value, bool):
        raise PydanticCustomError("number_not_bool", "expected a number, got a boolean")
    return value


Int = Annotated[int, BeforeValidator(_number)]
Real = Annotated[float, BeforeValidator(_number)]


# --------------------------------------------------------------------------- task
class _Task(_Section):
    seq_len: Int = Field(100, ge=2)
    """T: the span of the long-range dependency, in time steps (each task documents its length)."""

    def dims(self) -> tuple[int, int, int]:
        """(L, D, O): sequence length, input and output size, as ``rnnlab.tasks`` builds them
        (a test keeps the two in step); for memory estimates without importing torch."""
        raise NotImplementedError


class AddingTask(_Task):
    """Adding problem: sum the two marked numbers (rnnlab.tasks.Adding)."""

    name: Literal["adding"] = "adding"
    variant: Literal["uniform", "halves"] = "uniform"
    """uniform: markers anywhere (Le et al. 2015); halves: one per half (Arjovsky et al. 2016)."""

    def dims(self) -> tuple[int, int, int]:
        return self.seq_len, 2, 1


class CopyTask(_Task):
    """Copy/memory task: recall symbols after seq_len blanks (rnnlab.tasks.Copy)."""

    name: Literal["copy"] = "copy"
    n_symbols: Int = Field(10, ge=1)
    """How many symbols to memorise and recall."""
    n_categories: Int = Field(8, ge=2)
    """Alphabet size of the memorised symbols."""

    def dims(self) -> tuple[int, int, int]:
        return self.seq_len + 2 * self.n_symbols, self.n_categories + 2, self.n_categories + 1


class TemporalOrderTask(_Task):
    """Temporal order: classify the order of two marked symbols (rnnlab.tasks.TemporalOrder)."""

    name: Literal["temporal_order"] = "temporal_order"

    def dims(self) -> tuple[int, int, int]:
        return self.seq_len, 6, 4


class PermutationTask(_Task):
    """Random permutation: recall the first symbol at the end (rnnlab.tasks.Permutation)."""

    name: Literal["permutation"] = "permutation"
    n_symbols: Int = Field(100, ge=3)
    """Alphabet size; the first symbol is one of two classes, the rest are distractors."""

    def dims(self) -> tuple[int, int, int]:
        return self.seq_len, self.n_symbols, 2


def _task_tag(value: Any) -> str:
    """`task.name` selects the task's option set; it defaults to adding."""
    if isinstance(value, dict):
        return value.get("name", "adding")
    return getattr(value, "name", "adding")


TaskConfig = Annotated[
    Annotated[AddingTask, Tag("adding")]
    | Annotated[CopyTask, Tag("copy")]
    | Annotated[TemporalOrderTask, Tag("temporal_order")]
    | Annotated[PermutationTask, Tag("permutation")],
    Discriminator(_task_tag),
]
TASK_CONFIGS: dict[str, type[_Task]] = {
    "adding": AddingTask,
    "copy": CopyTask,
    "temporal_order": TemporalOrderTask,
    "permutation": PermutationTask,
}


# -------------------------------------------------------------------------- model
class ModelConfig(_Section):
    """Elman RNN h_t = φ(W_hh h_{t−1} + W_xh x_t + b) with a linear readout (rnnlab.model.elman)."""

    hidden_size: Int = Field(64, ge=1)
    """H: number of hidden units."""
    activation: ActivationName = "tanh"
    """φ, the elementwise nonlinearity."""
    init: InitName = "orthogonal"
    """Initialisation of the recurrent matrix W_hh (scaled by gain)."""
    gain: Real = Field(1.0, gt=0)
    """Scale of W_hh: std·√H for gaussian, the factor on Q or I, the top eigenvalue for np_rnn."""


# -------------------------------------------------------------------------- train
class TrainConfig(_Section):
    """The one training loop (rnnlab.train)."""

    steps: Int = Field(300, ge=0, le=10**9)
    """Number of optimizer updates; each draws a fresh batch."""
    batch_size: Int = Field(64, ge=1)
    """B: sequences per batch."""
    optimizer: OptimizerName = "adam"
    """sgd, adam or rmsprop."""
    lr: Real = Field(1e-3, gt=0)
    """Learning rate."""
    momentum: Real = Field(0.0, ge=0, lt=1)
    """Momentum for sgd and rmsprop (ignored by adam)."""
    clip_norm: Real | None = Field(None, gt=0)
    """Clip the global gradient norm to this value (Pascanu et al. 2013); null: never clip."""
    divergence_threshold: Real | None = Field(None, gt=0)
    """End the run as diverged when the gradient norm exceeds this; null: only on inf/nan."""
    eval_size: Int = Field(512, ge=1)
    """Size of the fixed held-out evaluation set."""
    dtype: Literal["float32", "float64"] = "float32"
    """Floating-point precision of model and data."""
    device: Literal["auto", "cpu", "cuda"] = "auto"
    """auto: CUDA when present, else CPU."""
    ensemble: Literal["auto", "off"] | Annotated[int, Field(ge=1)] = "auto"
    """Train grid points that differ only in seed, init, gain, lr, clip_norm or
    divergence_threshold together, as one stacked model of up to K networks (rnnlab.model.elman).
    Each is still its own run with the same numbers as alone. off: one at a time; K: stacks of
    at most K; auto: up to 16 where stacking pays (CUDA; on a CPU small multiplies or short
    sequences), fewer where memory or idle workers call for it. Not part of run_key."""

    @field_validator("ensemble", mode="before")
    @classmethod
    def _ensemble(cls, v: Any) -> Any:
        if v is False or v is True:  # YAML reads a bare off/on as a boolean
            return "off" if v is False else "auto"
        if v in ("auto", "off") or (isinstance(v, int) and v >= 1):
            return v
        raise PydanticCustomError("ensemble", "expected auto, off or a group size ≥ 1")


# -------------------------------------------------------------------------- probe
class ProbeConfig(_Section):
    """When gradients are measured (rnnlab.measure.probes)."""

    every: Int = Field(10, ge=1)
    """Measure the full gradient profile every N steps; always at step 0 and after the last."""


# ---------------------------------------------------------------- run, experiment
class RunConfig(_Section):
    """One grid point: everything needed to train and measure one network."""

    task: TaskConfig = Field(default_factory=AddingTask)
    model: ModelConfig = Field(default_factory=ModelConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    probe: ProbeConfig = Field(default_factory=ProbeConfig)
    seed: Int = Field(0, ge=0, le=2**63 - 1)
    """Seeds initialisation, training batches and the evaluation set."""

    @property
    def run_key(self) -> str:
        """Stable identity of what a run computes: the hash of its canonical JSON and of
        ``NUMERICS``, leaving out ``train.ensemble`` (how a run is scheduled changes no bit
        of what it computes: ``tests/test_reproducibility.py``)."""
        spec = self.model_dump(mode="json", exclude={"train": {"ensemble"}})
        blob = json.dumps(spec, sort_keys=True) + f"/numerics={NUMERICS}"
        return hashlib.sha256(blob.encode()).hexdigest()[:16]

    @property
    def ensemble_key(self) -> str:
        """Runs with equal keys can train together as one ensemble: every setting but
        ``MEMBER_KEYS`` agrees (task and length, model shape and activation, steps, batch,
        optimizer, probe schedule, dtype, device …)."""
        shared = {k: v for k, v in self.params().items() if k not in MEMBER_KEYS}
        return json.dumps(shared, sort_keys=True)

    def params(self) -> dict[str, Any]:
        """Every leaf by dotted key, e.g. {'task.seq_len': 100, 'model.gain': 1.0, 'seed': 0}."""
        return flatten(self.model_dump(mode="json"))

    def memory(self) -> dict[str, int]:
        """Bytes one run holds at its peak, by what holds them (an estimate from the shapes,
        within ~2× of the measured peak): the per-step states, the held-out set, the weights."""
        L, D, O = self.task.dims()
        B, H, E = self.train.batch_size, self.model.hidden_size, self.train.eval_size
        width = 8 if self.train.dtype == "float64" else 4
        weights = H * H + H * D + H + O * H + O
        # One-hot inputs are drawn as int64 (8 bytes) before the cast: 12 bytes an entry.
        return {  # h_t, δ_t and ∂ℓ/∂h_t for every step; the batch; an eval chunk's states
            "states (task.seq_len × train.batch_size × model.hidden_size)": width
            * (3 * L * B * H + L * min(B, E) * H)
            + 12 * L * B * D,
            "held-out set (train.eval_size × sequence length)": width * E * L * (D + 1)
            + 8 * L * min(B, E) * D,
            "weights (model.hidden_size²)": width * 5 * weights,  # + grads, optimizer, copies
        }


NUMERICS = 2
"""The version of rnnlab's arithmetic, part of every run_key: raised when a change alters the
bits a config computes (2: batch-size-independent multiplies and reductions, one CPU thread
per run, optimizers as batched elementwise ops), so a store never mixes runs of one config
computed two ways; runs stored under an older version are retrained, not reused."""

MEMBER_KEYS = (
    "seed",
    "model.init",
    "model.gain",
    "train.lr",
    "train.clip_norm",
    "train.divergence_threshold",
)
"""What the members of one ensemble may differ in (see ``RunConfig.ensemble_key``)."""

SweepAxes = dict[str, list[Any]]


NAME = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9._ -]*[A-Za-z0-9._-])?")
"""A valid experiment name (see ``Experiment.name``)."""


class ResourcesConfig(_Section):
    """What one job (an ensemble) asks of a Ray worker or a SLURM node; not part of run_key."""

    cpus: Real = Field(1.0, gt=0)
    """CPUs per grid point."""
    gpus: Real = Field(0.0, ge=0)
    """GPUs per grid point; fractions share a GPU (Ray); a SLURM job asks for whole GPUs."""
    partition: str | None = Field(None, max_length=200)
    """SLURM partition of the jobs (``--executor slurm``); null: the cluster's default."""
    time_min: Int = Field(60, ge=1, le=60 * 24 * 365)
    """SLURM time limit of one job (one ensemble), in minutes."""
    mem_gb: Real | None = Field(None, gt=0)
    """SLURM memory of one job in GB; null: the cluster's default."""


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


def flatten(tree: dict, prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in tree.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(flatten(v, key + "."))
        else:
            out[key] = v
    return out


def leaf_keys() -> list[str]:
    """Every dotted key a sweep may vary (the union of all tasks' options)."""
    keys = ["seed"]
    task_keys = dict.fromkeys(
        f"task.{f}" for cls in TASK_CONFIGS.values() for f in cls.model_fields
    )
    keys += list(task_keys)
    for section, cls in (("model", ModelConfig), ("train", TrainConfig), ("probe", ProbeConfig)):
        keys += [f"{section}.{f}" for f in cls.model_fields]
    return keys


def run_name(run: RunConfig, swept: list[str] = ()) -> str:
    """Readable run name, e.g. ``adding-T100-tanh-orthogonal1.0-s0`` (+ other swept keys)."""
    m = run.model
    name = f"{run.task.name}-T{run.task.seq_len}-{m.activation}-{m.init}{m.gain:g}-s{run.seed}"
    shown = {"task.name", "task.seq_len", "model.activation", "model.init", "model.gain", "seed"}
    params = run.params()
    for key in swept:
        if key not in shown and key in params:
            name += f"-{key.rsplit('.', 1)[-1]}{params[key]}"
    return name


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
                f"{dotted}: unknown key{_guess(str(loc[-1]), allowed)}; allowed keys: "
                + ", ".join(allowed)
            )
        elif kind == "literal_error":
            choices = e["ctx"]["expected"].replace("'", "").replace(" or ", ", ")
            hint = _guess(str(e["input"]), choices.split(", "))
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


OWN_MESSAGES = ("sweep_empty", "sweep_shape", "sweep_values", "experiment_name")
"""Errors whose message already says what was wrong with the value."""


def _short(value: Any, limit: int = 80) -> str:
    """repr of a bad value, cut to ``limit`` characters: a message is one readable line."""
    text = repr(value)
    return text if len(text) <= limit else f"{text[: limit - 12]}… ({len(text):,} chars)"


def _guess(word: str, allowed: list[str]) -> str:
    """' (did you mean 'x'?)' for a near miss or a common synonym, else ''."""
    synonym = SYNONYMS.get(word) or SYNONYMS.get(word.lower())
    if synonym in allowed:
        return f" (did you mean {synonym!r}?)"
    close = difflib.get_close_matches(word, allowed, n=1) or difflib.get_close_matches(
        word.lower(), allowed, n=1
    )
    return f" (did you mean {close[0]!r}?)" if close else ""


def _section(loc: tuple, task_section: type[_Section] | None) -> type[_Section]:
    if not loc:
        return Experiment
    if loc[0] == "task":
        return task_section or AddingTask
    return {
        "model": ModelConfig,
        "train": TrainConfig,
        "probe": ProbeConfig,
        "resources": ResourcesConfig,
    }.get(loc[0], Experiment)


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
                hint = _guess(leaf, near)
                hint = hint.replace("'", f"'{section}.", 1) if hint and section else hint
                hint = hint or _guess(key, sorted(valid))
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
                else:
                    setting = ", ".join(f"{k}={v!r}" for k, v in values.items())
                    problems.append(f"{where(loc)}: grid point ({setting}): {msg}")
            continue
        grid.setdefault(run.run_key, run)
    if problems:
        raise ConfigError(list(dict.fromkeys(problems)))
    return list(grid.values())
