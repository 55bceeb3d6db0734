"""The typed sections of a run config, and ``RunConfig``: one fully resolved grid point.

Each section is a strict :class:`~rnnlab.options.Options` model with a typed default and a
docstring under every field. The ``task`` section is composed from the tasks registry
(``rnnlab.tasks.TASKS``): ``task.name`` selects one task's option set, so a new task file
extends the schema with no edit here.

Torch-free, like all of ``rnnlab.config``. The implementations behind the other names
(``rnn.ACTIVATIONS``, ``rnn.INITS``, ``train.OPTIMIZERS``) are checked against the
``Literal`` names here by the test suite.
"""

from __future__ import annotations

import hashlib
import json
from typing import Annotated, Any, Literal, Union

from pydantic import (
    BaseModel,
    Discriminator,
    Field,
    Tag,
    field_validator,
    model_serializer,
    model_validator,
)
from pydantic_core import PydanticCustomError

from rnnlab.model import activations, cells, inits
from rnnlab.options import Int, Options, Real
from rnnlab.tasks import TASKS, Task

ActivationName = Literal.__getitem__(activations.NAMES)  # rnnlab.model.activations' table
InitName = Literal.__getitem__(inits.NAMES)  # rnnlab.model.inits' table
InputInitName = Literal.__getitem__(inits.INPUT_NAMES)  # its W_xh table
OptimizerName = Literal["sgd", "adam", "rmsprop"]


# --------------------------------------------------------------------------- task
TASK_CONFIGS: dict[str, type[Task]] = TASKS
"""Each task's options by name: the registry itself (a task's options are its class)."""
TaskName = Literal[tuple(TASKS)]
DEFAULT_TASK = "adding"


def _task_tag(value: Any) -> str:
    """`task.name` selects the task's option set; it defaults to adding."""
    if isinstance(value, dict):
        return value.get("name", DEFAULT_TASK)
    return getattr(value, "name", DEFAULT_TASK)


TaskConfig = Annotated[
    Union[tuple(Annotated[cls, Tag(name)] for name, cls in TASKS.items())],  # noqa: UP007
    Discriminator(_task_tag),
]


# -------------------------------------------------------------------------- model
CellName = Literal.__getitem__(cells.NAMES)  # rnnlab.model.cells' table


class ModelConfig(Options):
    """The recurrent network with a linear readout: the Elman RNN h_t = φ(W_hh h_{t−1} + W_xh
    x_t + b) (rnnlab.model.elman), or a gated baseline (rnnlab.model.gated)."""

    cell: CellName = "elman"
    """elman (the vanilla RNN, the default), lstm or gru: the same task, readout, training and
    measurements; a gated cell adds ‖∂L/∂c_t‖ (LSTM) and leaves out what only describes the
    Elman cell (W_hh spectrum, mean-field theory, Lyapunov exponent, Jacobian spectrum, unit
    statistics)."""
    hidden_size: Int = Field(64, ge=1)
    """H: number of hidden units."""
    activation: ActivationName = "tanh"
    """φ, the elementwise nonlinearity of the Elman cell (a gated cell has its own σ and tanh:
    leave it at tanh)."""
    init: InitName = "orthogonal"
    """Initialisation of the recurrent matrix W_hh (scaled by gain); for a gated cell, of each
    gate's H × H block of it."""
    gain: Real = Field(1.0, gt=0, le=1e6)
    """Scale of W_hh: std·√H for gaussian, the factor on Q or I, the top eigenvalue for np_rnn;
    at most 1e6 (as ``rnnlab theory``): far past any edge of chaos, and W_hh stays finite in
    float32 (a gain of 1e39 made it infinite before the first step)."""
    input_init: InputInitName = "default"
    """Initialisation of W_xh: default U(±1/√H) as nn.RNN; glorot_uniform U(±√(6/(D+H))) as
    Keras (for a gated cell, of each gate's block)."""

    @model_validator(mode="after")
    def _gated_activation(self) -> ModelConfig:
        if self.cell != "elman" and self.activation != "tanh":
            raise PydanticCustomError(
                "gated_activation",
                "model.activation={activation} applies to the Elman cell only; model.cell="
                "{cell} has its own sigmoid and tanh gates (leave model.activation at tanh; "
                "to sweep both, give the gated cells their own sub-grid in a list under sweep:)",
                {"activation": self.activation, "cell": self.cell},
            )
        return self


# -------------------------------------------------------------------------- train
class TrainConfig(Options):
    """The one training loop (rnnlab.train)."""

    steps: Int = Field(300, ge=0, le=10**9)
    """Number of optimizer updates; each takes the next batch (fresh, or of the fixed training
    set with ``train_size``). With ``epochs`` it is computed: leave it out."""
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
    train_size: Int | None = Field(None, ge=1)
    """A fixed training set of this many sequences, drawn once from the run's training stream
    and visited in epochs: each epoch a fresh order (a permutation from the same stream), in
    batches of ``batch_size`` with a last, smaller batch when the size is not a multiple (as
    Keras' ``fit``). Probe steps add ``train_set/*``, the loss and accuracy over the whole set.
    null: a fresh batch every step (an endless training stream)."""
    epochs: Int | None = Field(None, ge=1)
    """Passes over the fixed training set (needs ``train_size``): sets ``steps`` to
    epochs · ⌈train_size / batch_size⌉. null: ``steps`` counts the updates."""
    dtype: Literal["float32", "float64"] = "float32"
    """Floating-point precision of model and data."""
    device: Literal["auto", "cpu", "cuda"] = "auto"
    """auto: CUDA when present, else CPU."""
    ensemble: Literal["auto", "off"] | Annotated[int, Field(ge=1)] = "auto"
    """Train grid points that differ only in seed, init, gain, lr, clip_norm or
    divergence_threshold together, as one stacked model of up to K networks (rnnlab.model.elman).
    Each is still its own run with the same numbers as alone. off: one at a time; K: stacks of
    at most K; auto: up to 16 where stacking pays (CUDA; on a CPU small multiplies or short
    sequences), fewer where memory or idle workers call for it, never for a gated cell (it
    runs its members one after another: nothing to gain). Not part of run_key."""

    @model_validator(mode="before")
    @classmethod
    def _epochs(cls, v: Any) -> Any:
        """``epochs`` → ``steps``, before the fields are checked (``steps`` stays the one count
        the loop reads)."""
        if not isinstance(v, dict) or v.get("epochs") is None:
            return v
        epochs, size, batch = v["epochs"], v.get("train_size"), v.get("batch_size", 64)
        if size is None:
            raise PydanticCustomError(
                "epochs_need_train_size", "train.epochs needs train.train_size (a fixed set)"
            )
        if not all(type(n) is int and n >= 1 for n in (epochs, size, batch)):
            return v  # the fields' own checks report the bad one
        steps = epochs * -(-size // batch)
        if v.get("steps", steps) != steps:
            raise PydanticCustomError(
                "steps_and_epochs",
                "train.steps={given} contradicts train.epochs={epochs} (= {steps} steps of "
                "{batch} out of {size}); set one of them",
                {
                    "given": v["steps"],
                    "epochs": epochs,
                    "steps": steps,
                    "batch": batch,
                    "size": size,
                },
            )
        return {**v, "steps": steps}

    @model_serializer(mode="wrap")
    def _steps_from_epochs(self, handler) -> dict[str, Any]:
        """Over a fixed training set the dump leaves ``steps`` out where it is derived from
        ``epochs`` or at its default: a resolved experiment written back (a sweep's
        experiment.yaml) must still sweep over epochs, and reads back the same. (Without
        ``train_size`` the dump is what it always was: run_keys stay.)"""
        out = handler(self)
        default = type(self).model_fields["steps"].default
        if self.train_size is not None and (self.epochs is not None or self.steps == default):
            out.pop("steps", None)
        return out

    @field_validator("ensemble", mode="before")
    @classmethod
    def _ensemble(cls, v: Any) -> Any:
        if v is False or v is True:  # YAML reads a bare off/on as a boolean
            return "off" if v is False else "auto"
        if v in ("auto", "off") or (isinstance(v, int) and v >= 1):
            return v
        raise PydanticCustomError("ensemble", "expected auto, off or a group size ≥ 1")


# -------------------------------------------------------------------------- probe
class ProbeConfig(Options):
    """When gradients are measured (rnnlab.measure.probes)."""

    every: Int = Field(10, ge=1)
    """Measure the full gradient profile every N steps; always at step 0 and after the last."""
    jacobian_trajectories: Int = Field(16, ge=0, le=4096)
    """Held-out sequences the Jacobian spectrum (``jac/*``, first and last probe) is averaged
    over, at most ``train.batch_size`` and ``train.eval_size`` (the held-out set's first
    chunk: ``RunConfig.jacobian_inputs``); 0 skips it. It costs about seq_len × trajectories ×
    hidden_size³ float64 multiply-adds on the CPU (``RunConfig.jacobian_seconds``): 0.1 s at
    seq_len 100, hidden_size 64, minutes from hidden_size 512 at seq_len 1000."""


# ---------------------------------------------------------------------- resources
class ResourcesConfig(Options):
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


# --------------------------------------------------------------------------- run
class RunConfig(Options):
    """One grid point: everything needed to train and measure one network."""

    task: TaskConfig = Field(default_factory=TASKS[DEFAULT_TASK])
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
        for dotted, default in KEY_OMITS_AT_DEFAULT.items():  # keys of older runs stay
            section, leaf = dotted.split(".")
            if spec[section].get(leaf, default) == default:
                spec[section].pop(leaf, None)
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

    def jacobian_inputs(self) -> int:
        """How many held-out sequences the Jacobian spectrum is taken along: the first
        ``probe.jacobian_trajectories`` of the held-out set's first chunk (of at most
        ``train.batch_size``); 0 for a gated cell, which has none."""
        if not cells.CELLS[self.model.cell].elman_measures:
            return 0
        return min(self.probe.jacobian_trajectories, self.train.batch_size, self.train.eval_size)

    def jacobian_seconds(self) -> float:
        """About how long one probe's Jacobian spectrum takes on one CPU core: one H×H product
        per step and trajectory, and 12 SVDs per trajectory, at rates measured on the 2-core
        CPU (within ~2× from H = 64 to 256; rnnlab.measure.dynamics)."""
        n = self.jacobian_inputs()
        return n * self.model.hidden_size**3 * (5.4e-11 * self.task.length + 3e-9)

    def memory(self) -> dict[str, int]:
        """Bytes one run holds at its peak, by what holds them (an estimate from the shapes,
        within ~2× of the measured peak): the per-step states, the held-out set, the weights."""
        t = self.task
        L, D, O = t.length, t.input_size, t.output_size
        B, H, E = self.train.batch_size, self.model.hidden_size, self.train.eval_size
        width = 8 if self.train.dtype == "float64" else 4
        cell = cells.CELLS[self.model.cell]
        G = cell.gates
        weights = G * (H * H + H * D + 2 * H) + O * H + O
        # One-hot inputs are drawn as int64 (8 bytes) before the cast: 12 bytes an entry.
        return {  # h_t, δ_t and ∂ℓ/∂h_t for every step; the batch; an eval chunk's states
            "states (task.seq_len × train.batch_size × model.hidden_size)": width
            * (cell.state_width * L * B * H + L * min(B, E) * H)
            + 12 * L * B * D,
            "held-out set (train.eval_size × sequence length)": width * E * L * (D + 1)
            + 8 * L * min(B, E) * D,
            "weights (model.hidden_size²)": width * 5 * weights,  # + grads, optimizer, copies
            # drawn once (int64 one-hot first), then a copy per evaluation chunk (train_set/*)
            "fixed training set (train.train_size × sequence length)": (
                (2 * width * L * (D + 1) + 8 * L * D) * (self.train.train_size or 0)
            ),
        }


NUMERICS = 3
"""The version of rnnlab's arithmetic, part of every run_key: raised when a change alters the
bits a config computes (2: batch-size-independent multiplies and reductions, one CPU thread
per run, optimizers as batched elementwise ops; 3: every per-step norm ‖δ_t‖ and ‖∂L/∂x_t‖
summed in float64, so a float32 profile no longer reads 0 where δ_t is 1e−23), so a store
never mixes runs of one config computed two ways; runs stored under an older version are
retrained, not reused."""

KEY_OMITS_AT_DEFAULT = {
    "model.cell": "elman",
    "model.input_init": "default",
    "train.train_size": None,
    "train.epochs": None,
    "probe.jacobian_trajectories": 16,  # the THEORY_INPUTS it was taken along before
}
"""Options added after ``NUMERICS`` 2 that leave ``run_key`` out at their default: a run that
does not use one computes the same bits as before the option existed, so it keeps its key (and
its stored runs). Set to anything else they are part of the key like any option."""

MEMBER_KEYS = (
    "seed",
    "model.init",
    "model.gain",
    "train.lr",
    "train.clip_norm",
    "train.divergence_threshold",
)
"""What the members of one ensemble may differ in (see ``RunConfig.ensemble_key``)."""


def sections(config: type[BaseModel] = RunConfig) -> dict[str, list[type[Options]]]:
    """The sections of a config by key, each with its option models (every task's for
    ``task``), e.g. {'task': [AddingTask, …], 'model': [ModelConfig], …}."""
    out: dict[str, list[type[Options]]] = {}
    for key, field in config.model_fields.items():
        if key == "task":
            out[key] = list(TASKS.values())
        elif isinstance(field.annotation, type) and issubclass(field.annotation, Options):
            out[key] = [field.annotation]
    return out


def leaf_keys() -> list[str]:
    """Every dotted key a sweep may vary (the union of all tasks' options)."""
    keys = ["seed"]
    for section, models in sections().items():
        keys += dict.fromkeys(f"{section}.{f}" for model in models for f in model.model_fields)
    return keys


def flatten(tree: dict, prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in tree.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(flatten(v, key + "."))
        else:
            out[key] = v
    return out


def run_name(run: RunConfig, swept: list[str] = ()) -> str:
    """Readable run name, e.g. ``adding-T100-tanh-orthogonal1.0-s0`` (+ other swept keys)."""
    m = run.model
    unit = m.activation if m.cell == "elman" else m.cell
    name = f"{run.task.name}-T{run.task.seq_len}-{unit}-{m.init}{m.gain:g}-s{run.seed}"
    shown = {"task.name", "task.seq_len", "model.activation", "model.cell", "model.init"}
    shown |= {"model.gain", "seed"}
    params = run.params()
    for key in swept:
        if key not in shown and key in params:
            name += f"-{key.rsplit('.', 1)[-1]}{params[key]}"
    return name
