"""Every metric and tag name rnnlab writes, once. Producers (``rnnlab.train``,
``rnnlab.measure``) and consumers (``rnnlab.track``, ``rnnlab.report``, ``rnnlab.ui``, the
sweep's closing table) import them from here; no other module spells one.

Metric names follow MLflow's ``group/name`` convention, so the UI groups them into sections.
"""

from __future__ import annotations

# ---------------------------------------------------------------- every training step
TRAIN_LOSS = "train/loss"
TRAIN_ACCURACY = "train/accuracy"  # classification tasks
GRAD_NORM = "grad/norm"
"""The global gradient norm ‖∂L/∂θ‖₂ before clipping."""
GRAD_CLIPPED = "grad/clipped"
"""1 where clipping fired (only with ``train.clip_norm``)."""

# ---------------------------------------------------------------- probe steps
EVAL_LOSS = "eval/loss"
EVAL_ACCURACY = "eval/accuracy"
EVAL_LOSS_RATIO = "eval/loss_ratio"
"""Held-out loss over the task's memoryless baseline: 1 = learned nothing."""
TRAIN_SET_LOSS = "train_set/loss"
TRAIN_SET_ACCURACY = "train_set/accuracy"
TRAIN_SET_LOSS_RATIO = "train_set/loss_ratio"
"""The same over the whole fixed training set (``train.train_size``), at the current weights:
below 1 on it but not on held-out data is memorisation."""


def grad_param(parameter: str) -> str:
    """‖∂L/∂θ‖₂ of one parameter: ``grad/weight_hh``, ``grad/readout.weight`` …"""
    return f"grad/{parameter}"


PARAMETERS = ("bias", "weight_hh", "weight_ih", "readout.bias", "readout.weight")
"""The Elman model's parameters by name (``rnnlab.model.elman.Elman.named_parameters``), each
with its ``grad_param`` metric."""
GATED_PARAMETERS = (
    "bias_hh",
    "bias_ih",
    "weight_hh",
    "weight_ih",
    "readout.bias",
    "readout.weight",
)
"""A gated cell's (``rnnlab.model.gated.Gated``, PyTorch's names: W_ih and W_hh hold every
gate's block, b_ih and b_hh their biases)."""


W_HH_RADIUS = "weights/W_hh_radius"
W_HH_SIGMA_MAX = "weights/W_hh_sigma_max"
SLOPE = "grad_h/slope"
"""Fitted d ln n_t / dt of the gradient profile, nats per step (``rnnlab.measure.probes``)."""
LOG10_RATIO = "grad_h/log10_ratio"
FIT_POINTS = "grad_h/fit_points"
UNDERFLOW = "grad_h/underflow"
GRAD_X_SLOPE = "grad_x/slope"
"""The same fit as ``grad_h/slope`` on the input-gradient profile n^x_t = (1/B) Σ_b ‖∂L_b/∂x_t‖₂
(probe steps; the profile itself is the run's ``grad_x.parquet``)."""
GRAD_X_LOG10_RATIO = "grad_x/log10_ratio"
"""log10(n^x_1 / n^x_L)."""
GRAD_C_SLOPE = "grad_c/slope"
"""The LSTM's cell-state profile n^c_t = (1/B) Σ_b ‖∂L_b/∂c_t‖₂ (``model.cell: lstm``), fitted
as ``grad_h/slope`` (probe steps; the profile itself is the run's ``grad_c.parquet``)."""
GRAD_C_LOG10_RATIO = "grad_c/log10_ratio"
"""log10(n^c_1 / n^c_L)."""

# ---------------------------------------------------------------- along the theory's trajectories
# (``rnnlab.measure.dynamics``: the held-out inputs the theory uses, after a burn-in of L // 10)
UNITS_Q_HAT = "units/q_hat"
"""q̂: mean of z_t,i² over the steps after the burn-in, sequences and units, beside
``theory/q_star`` (every probe step)."""
UNITS_SATURATED = "units/saturated"
"""Fraction of (t, b, i) with |φ′(z)| ≤ 0.01 γ (every probe step)."""
UNITS_DEAD = "units/dead"
"""Fraction of units saturated at every step after the burn-in of every sequence: for ReLU,
never active (every probe step)."""
JAC_LOG_SV_MAX = "jac/log_sv_max"
JAC_LOG_SV_MIN = "jac/log_sv_min"
"""ln σ_max and ln σ_min of J(L) = ∂h_L/∂h_0, averaged over trajectories (first and last
probe; ln σ_min only where float64 resolves it); the spectrum at every distance k is the
run's ``jacobian.parquet``."""

TABLE_JACOBIAN = "jacobian"
"""The run's artifact ``jacobian.parquet``: step, k, log_sv_max, log_sv_min (ln σ of J(k),
averaged over trajectories) at the first and last probe."""
TABLE_GRAD_X = "grad_x"
"""The run's artifact ``grad_x.parquet``: step, t, k, n_t = (1/B) Σ_b ‖∂L_b/∂x_t‖₂ at every probe."""
TABLE_GRAD_C = "grad_c"
"""The run's artifact ``grad_c.parquet`` (LSTM): step, t, k, n_t = (1/B) Σ_b ‖∂L_b/∂c_t‖₂ at
every probe."""
TABLES = (TABLE_JACOBIAN, TABLE_GRAD_X, TABLE_GRAD_C)
"""Every per-step table a run may store (``rnnlab.measure.measurement.Measurement.tables``),
by artifact name."""

# ---------------------------------------------------------------- theory beside measurement
THEORY_SLOPE = "theory/slope"
THEORY_CHI1 = "theory/chi1"
THEORY_DEPTH_SCALE = "theory/depth_scale"
THEORY_Q_STAR = "theory/q_star"
THEORY_Q_IN = "theory/q_in"
THEORY_BIAS_VAR = "theory/bias_var"
LYAPUNOV_MAX = "dyn/lyapunov_max"

# ---------------------------------------------------------------- profiles as metric series
PROFILE_INIT = "grad_h/init"
PROFILE_FINAL = "grad_h/final"
"""The first and last gradient profiles n_{T−k} with MLflow step = distance k."""
PROFILE_INIT_LOG10 = "grad_h/init_log10"
PROFILE_FINAL_LOG10 = "grad_h/final_log10"
"""The same, as log10 n_{T−k}/n_T (the decay curves)."""

# ---------------------------------------------------------------- tags
TAG_VERSION = "rnnlab.version"
TAG_RUN_KEY = "rnnlab.run_key"
TAG_STATUS = "rnnlab.status"
TAG_HOST = "rnnlab.host"
TAG_PID = "rnnlab.pid"
TAG_ROLE = "rnnlab.role"
TAG_GRID_SIZE = "rnnlab.grid_size"
TAG_ENSEMBLE_SIZE = "rnnlab.ensemble_size"
TAG_DIVERGED_STEP = "rnnlab.diverged_step"
ROLE_SWEEP = "sweep"
"""The value of ``rnnlab.role`` on a sweep's parent run."""


def sweep_metric(outcome: str) -> str:
    """A sweep parent run's closing count: ``sweep/finished``, ``sweep/wall_seconds`` …"""
    return f"sweep/{outcome}"


ELMAN_ONLY_GROUPS = ("weights", "theory", "dyn", "units", "jac")
"""Metric groups that describe the Elman cell's W_hh and φ: a gated cell does not log them
(``rnnlab.model.cells.logged_by``)."""


def run_metrics() -> tuple[str, ...]:
    """Every metric a run logs: this module's ``group/name`` constants (tags are dotted and
    have no '/'; a new metric joins by being written here) and ``grad/<parameter>`` for each
    of ``PARAMETERS``. What an ``expect:`` check may name (``rnnlab.config.expect``)."""
    spelled = (v for k, v in globals().items() if k.isupper() and isinstance(v, str))
    params = dict.fromkeys(PARAMETERS + GATED_PARAMETERS)
    return tuple(v for v in spelled if "/" in v) + tuple(map(grad_param, params))


# ---------------------------------------------------------------- MLflow's own tags
# rnnlab sets (or searches by) these; MLflow's UI reads them.
MLFLOW_GIT_COMMIT = "mlflow.source.git.commit"
MLFLOW_PARENT_RUN = "mlflow.parentRunId"
MLFLOW_RUN_NAME = "mlflow.runName"
MLFLOW_RUN_COLOR = "mlflow.runColor"
MLFLOW_NOTE = "mlflow.note.content"
"""On an experiment: its description, shown as the experiment's note."""
MLFLOW_EXPERIMENT_KIND = "mlflow.experimentKind"


def mlflow_shared_view(key: str) -> str:
    """The experiment tag holding a saved runs-page view (``rnnlab.ui``)."""
    return f"mlflow.sharedViewState.{key}"
