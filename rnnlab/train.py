"""The one training loop. It yields measurements; tracking is somebody else's job.

``train(run)`` is a generator of :class:`Measurement` — one per training step s = 0..steps.
It is ``train_ensemble([run])``: the same loop trains several runs as one stacked model
(``rnnlab.model.elman.Elman``, K members), yielding (member, measurement) pairs with each
member's numbers as if it trained alone.
Measurement s is taken on step s's batch *before* its update (so step 0 describes the network
at initialisation); the last one (s = steps) is taken after the final update and makes no
update. Every ``probe.every`` steps, and at the first and last, it also carries the gradient
profile n_t (see ``rnnlab.measure.probes``), parameter gradient norms, the W_hh spectrum and
held-out evaluation.

Metrics (named in ``rnnlab.measure.names``), every step: ``train/loss``,
``train/accuracy`` (classification tasks), ``grad/norm`` (global gradient norm before
clipping), and with ``train.clip_norm`` set, ``grad/clipped`` (1 if clipping fired).
Probe steps add: ``eval/loss``, ``eval/accuracy``, ``eval/loss_ratio`` (eval loss / the task's
baseline), with ``train.train_size`` the same over the fixed training set (``train_set/*``),
``grad/<parameter>``, ``weights/W_hh_radius``, ``weights/W_hh_sigma_max``,
``grad_h/slope``, ``grad_h/log10_ratio``, ``grad_h/fit_points``, ``grad_h/underflow``,
``grad_x/slope`` and ``grad_x/log10_ratio`` (the input-gradient profile ‖∂L/∂x_t‖, stored as the
table ``grad_x``), and along the theory's held-out trajectories ``units/q_hat``, ``units/saturated``, ``units/dead``
(``rnnlab.measure.dynamics``). Step 0 adds the mean-field predictions ``theory/slope``, ``theory/chi1``,
``theory/depth_scale``, ``theory/q_star`` (and the inputs they used, ``theory/q_in``,
``theory/bias_var``); steps 0 and last add ``dyn/lyapunov_max``
(see ``rnnlab.measure.theory``) and the Jacobian spectrum: ``jac/log_sv_max``,
``jac/log_sv_min`` and the table ``jacobian`` (``Measurement.tables``; along
``probe.jacobian_trajectories`` held-out sequences, none at 0). A gated cell
(``model.cell`` lstm or gru, ``rnnlab.model.gated``) logs the profiles, their summaries and the
evaluation only — the weights/, units/, theory/, dyn/ and jac/ metrics describe the Elman
cell — and the LSTM adds ``grad_c/slope``, ``grad_c/log10_ratio`` and the table ``grad_c``
(‖∂L/∂c_t‖, its cell state's profile).

A non-finite loss or gradient norm, or a norm above ``train.divergence_threshold``, ends the run
at that step as *diverged*: its measurement is yielded (inf and nan included, they are data)
and no update is made with it.

Clipping, per-member learning rates and the divergence test are batched tensor ops; metrics
stay on the device and reach the host once per probe step or every ``SYNC_EVERY`` steps, so
on a GPU the host never waits for the device between two probe steps, and a step between probes
is replayed from a CUDA graph (``_Graphs``; ``RNNLAB_CUDA_GRAPHS=0`` turns that off), with the
same bits. There, a probe step's
float64 host measurements (W_hh spectrum, unit statistics, Jacobian spectrum) read a copy of
the weights on measurement threads while the next steps train (``MEASURE_THREADS``; on a CPU
they run in the loop unless asked); the measurements are yielded in step order all the same,
with the same bits.
"""

from __future__ import annotations

import functools
import hashlib
import math
import os
import warnings
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass

import torch

from rnnlab.config import RunConfig
from rnnlab.measure import dynamics, names, probes, theory
from rnnlab.measure.measurement import MEASURE_THREADS as MEASURE_THREADS  # re-exported
from rnnlab.measure.measurement import Measurement, measure_threads
from rnnlab.measure.measurement import usable_cores as usable_cores
from rnnlab.model.cells import CELLS
from rnnlab.model.elman import (
    Elman,
    MemberInit,
    MemberWeights,
    Stacked,
    aligned,
    check_reproducible,
    stack,
)
from rnnlab.model.gated import Gated
from rnnlab.optim import OPTIMIZERS
from rnnlab.tasks import Task, make_task


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("train.device=cuda but CUDA is not available on this machine")
    return torch.device(name)


def stream(seed: int, purpose: str) -> torch.Generator:
    """An independent, reproducible random stream per (seed, purpose)."""
    digest = hashlib.sha256(f"rnnlab/{seed}/{purpose}".encode()).digest()
    return torch.Generator().manual_seed(int.from_bytes(digest[:8], "little") >> 1)


def build(runs: list[RunConfig], device: torch.device | None = None) -> tuple[Task, Stacked]:
    """The task and the freshly initialised model of runs that share an ``ensemble_key``: one
    member per run, each initialised from its own seed's stream as if it were alone; an
    ``Elman`` network, or a ``Gated`` one for ``model.cell`` lstm or gru."""
    first = runs[0]
    task = make_task(**first.task.model_dump())
    members = [
        MemberInit(r.model.init, r.model.gain, stream(r.seed, "init"), r.model.input_init)
        for r in runs
    ]
    shape = (task.input_size, first.model.hidden_size, task.output_size, task.readout)
    dtype = getattr(torch, first.train.dtype)
    cell = first.model.cell
    if cell == "elman":
        model = Elman(*shape, activation=first.model.activation, members=members, dtype=dtype)
    else:
        model = Gated(*shape, cell=cell, members=members, dtype=dtype)
    return task, model.to(device or resolve_device(first.train.device))


def train(run: RunConfig) -> Iterator[Measurement]:
    """Train one network, yielding a :class:`Measurement` per step (see the module docstring)."""
    for _, m in train_ensemble([run]):
        yield m


def train_ensemble(
    runs: list[RunConfig], threads: int | None = None
) -> Iterator[tuple[int, Measurement]]:
    """Train runs that share an ``ensemble_key`` as one stacked model (``rnnlab.model.elman``).

    Yields (index into ``runs``, :class:`Measurement`): every member still training, in
    order, each step. Each member sees exactly the batches, initialisation, clipping and
    learning rate it would alone. A diverged member's last measurement is yielded and it is
    dropped before the update; the others go on. ``threads``: for the probes' host
    measurements of a GPU run, where ``RNNLAB_MEASURE_THREADS`` is not set
    (``measure_threads``).
    """
    keys = {r.ensemble_key for r in runs}
    if len(keys) != 1:
        raise ValueError("an ensemble's runs must agree on everything but config.MEMBER_KEYS")
    device = resolve_device(runs[0].train.device)
    threads = min(measure_threads(threads, device.type), len(runs))
    with _one_thread(device), _Later(threads) as later:
        yield from _train(runs, device, later)


@contextmanager
def _one_thread(device: torch.device):
    """Train on one CPU thread: ATen splits work between threads at points that depend on the
    thread count, which changes the order of float additions, so a run's bits would depend on
    how many workers share the machine. Parallelism comes from workers (one run each) and, on
    a GPU, from measurement threads (``MEASURE_THREADS``), each on one thread too: a worker per
    core each with a thread per core would oversubscribe the machine many times over."""
    if device.type == "cpu":
        check_reproducible()
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


SYNC_EVERY = 32
"""Steps between host syncs away from probe steps. Metrics, clipping, learning rates and
divergence stay on the device in between, so the host queues a GPU's work ahead instead of
waiting for it every step; on a CPU it changes nothing."""


def _train(
    runs: list[RunConfig], device: torch.device, later: _Later
) -> Iterator[tuple[int, Measurement]]:
    cfg = runs[0].train  # the shared settings
    dtype = getattr(torch, cfg.dtype)
    task, model = build(runs, device)
    optimizer = OPTIMIZERS[cfg.optimizer](list(model.parameters()), momentum=cfg.momentum)
    batches = [stream(r.seed, "train") for r in runs]
    fixed = FixedSet.draw(task, batches, cfg) if cfg.train_size is not None else None
    held_out = HeldOut.draw(task, [stream(r.seed, "eval") for r in runs], cfg, device, dtype)
    train_set = fixed.held_out(cfg.batch_size, device, dtype) if fixed is not None else None
    active = list(range(len(runs)))  # index into runs of each member still in the stack
    # Per-member settings as (K,) float64 tensors on the device, shrunk with the stack.
    inf = math.inf
    settings = torch.tensor(
        [[r.train.lr, r.train.clip_norm or inf, r.train.divergence_threshold or inf] for r in runs],
        dtype=torch.float64,
        device=device,
    )
    clipping = any(r.train.clip_norm is not None for r in runs)
    states = len(runs) * task.length * cfg.batch_size * runs[0].model.hidden_size
    graphs = _Graphs(_graph_capture(device, states * dtype.itemsize))
    pending: list[tuple[int, list[int], tuple[str, ...], torch.Tensor, list | None]] = []
    synced: list[tuple[int, Measurement, Future | None]] = []  # synced, not yet yielded
    jac = runs[0].jacobian_inputs()  # probe and shapes are shared by the stack
    probed = 0  # the latest probe step

    def device_step(x: torch.Tensor, y: torch.Tensor) -> tuple[tuple[str, ...], torch.Tensor]:
        """A step between probes: forward, backward, metrics, update; device work only, so a
        CUDA graph can capture it (``_Graphs``)."""
        values = _forward_backward(task, model, x, y, False, settings, clipping)
        _update(model, optimizer, values, settings, clipping)
        return _pack(values)

    for step in range(cfg.steps + 1):
        last = step == cfg.steps
        probing = step % runs[0].probe.every == 0 or last
        if fixed is None:
            drawn = [task.sample(cfg.batch_size, batches[k]) for k in active]
        else:
            drawn = fixed.next_batch(active, cfg.batch_size)
        x, y = _stack(drawn, device, dtype)
        if not last:  # the last measurement makes no update
            optimizer.advance()
        if probing:  # measured before the update: ‖∂L/∂θ‖₂ per parameter, the full profile
            values = _forward_backward(task, model, x, y, True, settings, clipping)
            probe = _probe(task, model, held_out, step, last, x.shape[2], train_set, later, jac)
            probed = step
            if not last:
                _update(model, optimizer, values, settings, clipping)
            metrics, packed = _pack(values)
        else:
            probe = None
            metrics, packed = graphs.run(device_step, x, y)
        pending.append((step, list(active), metrics, packed, probe))

        if probing or len(pending) >= SYNC_EVERY:
            ready, dropped = _sync(pending, runs)
            pending = []
            kept = [j for j, k in enumerate(active) if k not in dropped]
            if last or not kept:  # the end: every measurement, waiting for the last
                yield from _release(synced + ready, math.inf)
                return
            # Yield what is ready; the newest probe's host measurements may still run
            # while the next steps train (an older probe's are waited for).
            synced = yield from _release(synced + ready, probed)
            if len(kept) < len(active):  # drop the diverged: they stop, the others go on
                # (a member's update is elementwise: the others' bits are those of alone)
                active = [active[j] for j in kept]
                model.keep(kept)
                optimizer.keep(kept, list(model.parameters()))
                held_out.keep(kept)
                if train_set is not None:
                    train_set.keep(kept)
                settings = settings[kept]
                graphs.reset()  # new parameters: the captured steps point at the old ones


def _forward_backward(task, model: Stacked, x, y, probing: bool, settings, clipping: bool):
    """Forward and backward on a batch x (K, L, B, D), y (K, S, B, …): the step's metrics per
    member as (K,) device tensors, and at a probe step each parameter's gradient norm (the
    model records the profiles: ``record_hidden_grads``)."""
    model.record_hidden_grads = probing
    out = model(x)  # (K, S, B, O)
    loss = _per_member(lambda o, t: task.loss(o, t).mean(), out, y)  # (K,) batch means
    for p in model.parameters():
        p.grad = None
    loss.sum().backward()  # members share no parameter: each gets its own loss's gradient
    params = dict(model.named_parameters())
    norm = _norms(torch.cat([p.grad.flatten(1) for p in params.values()], 1))
    _, clip, threshold = settings.unbind(1)
    wide = norm.double()  # float64 once: the clipping and the host read it so (``_pack``)
    values = {names.TRAIN_LOSS: loss.detach(), names.GRAD_NORM: wide}
    if task.classification:
        values[names.TRAIN_ACCURACY] = _per_member(
            lambda o, t: task.accuracy(o, t).mean(), out.detach(), y
        )
    if clipping:
        values[names.GRAD_CLIPPED] = wide > clip  # clip = inf where clip_norm is null
    values[DIVERGED] = ~torch.isfinite(loss.detach()) | ~torch.isfinite(norm) | (wide > threshold)
    if probing:
        values |= {names.grad_param(n): _norms(p.grad) for n, p in params.items()}
    return values


def _update(model: Stacked, optimizer, values: dict, settings, clipping: bool) -> None:
    """Clip (Pascanu et al. 2013: rescale the gradient to norm clip_norm) and update each
    member by its own learning rate; a member that diverged at this step makes no update (it
    is dropped at the next sync). ``optimizer.advance()`` came first."""
    lr, clip, _ = settings.unbind(1)
    if clipping:
        wide = values[names.GRAD_NORM]  # float64
        scale = torch.where(wide > clip, clip / (wide + 1e-6), 1.0)
        _scale_members([p.grad for p in model.parameters()], scale)
    optimizer.apply(torch.where(values[DIVERGED], 0.0, lr))


def _pack(values: dict) -> tuple[tuple[str, ...], torch.Tensor]:
    """A step's metrics as (their names, one (n, K) float64 tensor): one copy to the host."""
    return tuple(values), torch.stack([v.double() for v in values.values()])


DIVERGED = "diverged"
"""The divergence flag's slot among a step's values (not a metric: ``Measurement.diverged``)."""
THEORY_INPUTS = 16
"""Held-out sequences the theory's predictions and Lyapunov exponents are taken along."""


def _probe(
    task,
    model: Stacked,
    held_out: HeldOut,
    step: int,
    last: bool,
    batch_size: int,
    train_set: HeldOut | None,
    later: _Later,
    jacobian: int,
) -> list:
    """Per member at a probe step: (profile n_t, its metrics, its tables, the host
    measurements' Future or None) — the gradient profile's summary, held-out evaluation (and
    over the fixed training set, if any), and at the first and last probe the theory beside
    it (a probe step syncs with the device anyway); ``_host_measures`` goes to ``later``,
    with the Jacobian spectrum along ``jacobian`` trajectories (``RunConfig.jacobian_inputs``).
    ``batch_size``: this step's batch (smaller at the end of an epoch). A gated cell gets the
    profiles (and the LSTM its cell-state profile) and the evaluation: the rest describes the
    Elman cell's W_hh and φ only."""
    profiles = probes.gradient_profile(model.hidden_grad_norms, batch_size)
    input_profiles = probes.gradient_profile(model.input_grad_norms, batch_size)
    cell_profiles = None
    if model.cell_grad_norms is not None:
        cell_profiles = probes.gradient_profile(model.cell_grad_norms, batch_size)
    evals = evaluate(task, model, held_out)
    if train_set is not None:
        renamed = {
            names.EVAL_LOSS: names.TRAIN_SET_LOSS,
            names.EVAL_LOSS_RATIO: names.TRAIN_SET_LOSS_RATIO,
            names.EVAL_ACCURACY: names.TRAIN_SET_ACCURACY,
        }
        on_train = evaluate(task, model, train_set)
        evals = [
            e | {renamed[n]: v for n, v in t.items()} for e, t in zip(evals, on_train, strict=True)
        ]
    elman = CELLS[model.cell].elman_measures
    ends = step == 0 or last  # the first and last probe
    if elman:  # one copy of each for the stack: the optimizer updates the weights in place
        params = (model.weight_ih, model.weight_hh, model.bias)  # a gated cell has none of them
        x = held_out.all_inputs(THEORY_INPUTS)  # while the copies are measured
        host = [_snapshot(t) for t in (*params, x)]
        along = rows = None  # the Jacobian spectrum's trajectories: first and last probe
        if ends and jacobian > 0:  # its products for the whole stack on the device, if covered
            inputs = held_out.all_inputs(jacobian)
            rows = dynamics.jacobian_spectra_on_device(*params, inputs, model.activation)
            along = _snapshot(inputs) if rows is None else None
    lyapunov = None  # every member's at once: one launch on a GPU (``theory.lyapunov_max_stacked``)
    if elman and ends:
        lyapunov = theory.lyapunov_max_stacked(*params, x, model.activation).tolist()
    out = []
    for k, profile in enumerate(profiles):
        m = probes.profile_summary(profile) | evals[k] | probes.input_summary(input_profiles[k])
        tables = {names.TABLE_GRAD_X: probes.profile_table(input_profiles[k])}
        if cell_profiles is not None:
            m |= probes.cell_summary(cell_profiles[k])
            tables[names.TABLE_GRAD_C] = probes.profile_table(cell_profiles[k])
        if not elman:
            out.append((profile.numpy(), m, tables, None))
            continue
        if step == 0:  # theory beside measurement
            m |= theory.run_predictions(model.member(k), x[k])
        if lyapunov is not None:
            m[names.LYAPUNOV_MAX] = lyapunov[k]
        w_ih, w_hh, b, x_k = (t[k] for t in host)
        member = MemberWeights(w_ih, w_hh, b, model.activation)
        jac = None  # the Jacobian spectrum's table, made on a measurement thread
        if rows is not None:  # from the rows carried on the device: the SVDs
            jac = functools.partial(dynamics.spectrum_from_rows, *rows[k])
        elif along is not None:
            jac = functools.partial(dynamics.jacobian_spectrum, member, along[k])
        measured = later.submit(_host_measures, member, x_k, jac)
        out.append((profile.numpy(), m, tables, measured))
    return out


def _snapshot(t: torch.Tensor) -> torch.Tensor:
    """A float64 copy of t on the CPU: what the host measurements read (``dynamics._host``)."""
    return t.detach().to("cpu", torch.float64, copy=True)


def _host_measures(
    member: MemberWeights, x: torch.Tensor, jacobian: Callable[[], dict] | None
) -> tuple[dict, dict]:
    """One member's float64 measurements on the CPU, from a snapshot of its weights and its
    theory inputs x (L, B, D): the W_hh spectrum and unit statistics, and where asked the
    Jacobian spectrum's table, ``jacobian()``: the host's products along held-out inputs, or
    the SVDs of the rows carried on the device (``dynamics.jacobian_spectra_on_device``).
    Returns (metrics, tables). The Jacobian spectrum is most of a short run's CPU time (an
    H×H product per step and trajectory, and the SVDs)."""
    m = probes.spectrum(member.weight_hh) | dynamics.unit_statistics(member, x)
    tables = {}
    if jacobian is not None:
        table = jacobian()
        tables[names.TABLE_JACOBIAN] = table
        m |= dynamics.jacobian_summary(table)
    return m, tables


GRAPHS = "RNNLAB_CUDA_GRAPHS"
"""Set to 0 to run every step on CUDA as it comes, with no CUDA graph (``_Graphs``)."""

Capture = Callable[[Callable[[], object]], tuple[Callable[[], None], object]]
"""capture(fn) → (replay, fn's result): records fn's device work once; replay() runs it again
on the same tensors (``torch.cuda.CUDAGraph``)."""


GRAPH_BYTES = 2**28
"""The largest step captured: hidden states (K·L·B·H values) of at most 256 MiB. A larger step
is compute-bound (its launches cost nothing in comparison), and a graph keeps its own memory
for the step (one per batch shape, beside what probe steps use), which would double or triple
the footprint of a run that needs most of the GPU."""


def _graph_capture(device: torch.device, state_bytes: int = 0) -> Capture | None:
    """How steps between probes are captured on this device: CUDA graphs on CUDA for a step
    whose hidden states take at most ``GRAPH_BYTES`` (unless ``RNNLAB_CUDA_GRAPHS=0``), none
    elsewhere: a CPU runs each step's calls as they come."""
    off = os.environ.get(GRAPHS, "1").strip().lower() in ("0", "off", "false", "no")
    if device.type != "cuda" or off or state_bytes > GRAPH_BYTES or _CAPTURE_FAILED:
        return None
    return _cuda_capture


_CAPTURE_FAILED: list[str] = []
"""Why a capture failed in this process, if one did: no run here tries again (a failed capture
can leave PyTorch's allocator unable to capture, and each try would keep a step's memory)."""


@functools.cache
def _capture_stream(index: int) -> torch.cuda.Stream:
    """One side stream per device for the warm-up and the capture: each new stream would get
    cuBLAS workspaces of its own, kept for the life of the process."""
    return torch.cuda.Stream(index)


def _cuda_capture(fn):
    graph = torch.cuda.CUDAGraph()
    main = torch.cuda.current_stream()
    try:  # thread_local: the measurement threads may run CPU work meanwhile
        with torch.cuda.graph(
            graph, stream=_capture_stream(main.device_index), capture_error_mode="thread_local"
        ):
            out = fn()
    except BaseException:
        torch.cuda.set_stream(main)  # a capture that fails to end leaves its stream current
        torch.cuda.synchronize()
        raise
    return graph.replay, out


class _Graphs:
    """Steps between probes replayed from a captured graph: on a GPU every launch of a step
    (a few dozen for one network, a few per member more in a stack) costs the host 5–100 µs,
    more than small shapes take to compute; a replay is one launch for all of them.

    A batch shape's first step runs as it is (the warm-up: kernels compiled, the optimizer's
    state made), its second is captured and replayed, and every later one copies its batch
    into the captured inputs and replays: the same kernels on the same tensors, so the same
    bits. At most ``LIMIT`` shapes (a fixed training set's last batch of an epoch is smaller);
    ``reset`` when the parameters are new tensors (``Stacked.keep``). A capture that fails
    warns, and this run and every later one in the process go on without (the step runs as
    it is: nothing lost)."""

    LIMIT = 2

    def __init__(self, capture: Capture | None):
        self.capture = capture
        self.captured: dict[tuple, tuple] = {}  # shapes → (replay, x, y, (names, packed))
        self.warm: set[tuple] = set()

    def reset(self) -> None:
        self.captured.clear()
        self.warm.clear()

    def run(self, step: Callable, x: torch.Tensor, y: torch.Tensor):
        """step(x, y), replayed where it was captured."""
        key = (tuple(x.shape), tuple(y.shape))
        if self.capture is None or (key not in self.captured and len(self.captured) >= self.LIMIT):
            return step(x, y)
        if key not in self.warm:
            self.warm.add(key)
            with _side_stream(x.device):
                return step(x, y)
        if key not in self.captured:
            static = x.clone(), y.clone()
            try:
                replay, out = self.capture(lambda: step(*static))
            except Exception as e:  # this device or build cannot capture the step
                warnings.warn(
                    f"rnnlab: could not capture the training step in a CUDA graph "
                    f"({type(e).__name__}: {e}); training without (set {GRAPHS}=0 to skip "
                    f"trying)",
                    RuntimeWarning,
                    stacklevel=2,
                )
                self.capture = None
                _CAPTURE_FAILED.append(f"{type(e).__name__}: {e}")
                return step(x, y)
            self.captured[key] = (replay, *static, out)
        replay, sx, sy, (metrics, packed) = self.captured[key]
        sx.copy_(x)
        sy.copy_(y)
        replay()
        return metrics, packed.clone()  # the next replay writes over it


@contextmanager
def _side_stream(device: torch.device):
    """Run on a side stream on CUDA, as a step before its capture must (PyTorch's CUDA graphs
    notes: warm-up on a side stream); nothing elsewhere."""
    if device.type != "cuda":
        yield
        return
    main = torch.cuda.current_stream(device)
    side = _capture_stream(main.device_index)
    side.wait_stream(main)
    with torch.cuda.stream(side):
        yield
    main.wait_stream(side)


class _Later:
    """Runs functions on ``threads`` threads, or at once in the caller when threads is 0;
    either way a Future holds the result (or the exception)."""

    def __init__(self, threads: int):
        self.pool = None
        if threads > 0:  # each on the caller's thread count (1: ``_one_thread``), set at once:
            # ATen passes it to a new thread only at its first parallel call, after LAPACK's
            self.pool = ThreadPoolExecutor(
                threads, "rnnlab-measure", torch.set_num_threads, (torch.get_num_threads(),)
            )

    def submit(self, fn, *args) -> Future:
        if self.pool is not None:
            return self.pool.submit(fn, *args)
        done = Future()
        try:
            done.set_result(fn(*args))
        except Exception as e:
            done.set_exception(e)
        return done

    def __enter__(self) -> _Later:
        return self

    def __exit__(self, *exc) -> None:
        """Drop what has not started, wait for what has (one member's measurement each)."""
        if self.pool is not None:
            self.pool.shutdown(wait=True, cancel_futures=True)


def _sync(pending: list, runs: list[RunConfig]) -> tuple[list, set[int]]:
    """Bring the pending steps' metrics to the host in one transfer. Returns each member's
    (index into runs, Measurement, its host measurements' Future or None) in step order —
    a member's measurements end at the step it diverged — and the set of members (indices
    into runs) that diverged."""
    flat = torch.cat([packed.flatten() for _, _, _, packed, _ in pending]).tolist()  # the sync
    dropped: set[int] = set()
    ready = []
    at = 0
    for step, active, metrics, _, probe in pending:
        K = len(active)
        table = {name: flat[at + i * K : at + (i + 1) * K] for i, name in enumerate(metrics)}
        at += len(metrics) * K
        for j, k in enumerate(active):
            if k in dropped:
                continue
            m = {name: column[j] for name, column in table.items() if name != DIVERGED}
            if runs[k].train.clip_norm is None:
                m.pop(names.GRAD_CLIPPED, None)
            profile, tables, measured = None, {}, None
            if probe is not None:
                profile, extra, tables, measured = probe[j]
                m |= extra
            diverged = bool(table[DIVERGED][j])
            ready.append((k, Measurement(step, m, profile, diverged, tables), measured))
            if diverged:
                dropped.add(k)
    return ready, dropped


def _release(synced: list, newest: float):
    """Yield the synced measurements in order, each once its host measurements are in: wait
    for those of steps before ``newest``, stop at the first of a later step still running.
    Returns the rest."""
    for i, (k, m, measured) in enumerate(synced):
        if measured is not None:
            if m.step >= newest and not measured.done():
                return synced[i:]
            metrics, tables = measured.result()
            m.metrics |= metrics
            m.tables |= tables
        yield k, m
    return []


def _per_member(fn, out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """fn(out_k, y_k) for each member k of a stack: (K, S, B, …) → (K, …).

    Every per-member number is computed by its own call on exactly the shapes it has alone:
    a reduction over several members' data may sum in another order than over one member's
    (it did for the copy task's loss at B = 2), and a member's bits must not depend on its
    stack (tests/test_reproducibility.py)."""
    return stack([fn(aligned(o), aligned(t)) for o, t in zip(out, y, strict=True)])


def _norms(x: torch.Tensor) -> torch.Tensor:
    """‖x_k‖₂ per member of a (K, …) tensor, each by its own reduction (see _per_member)."""
    return stack([torch.linalg.vector_norm(aligned(row)) for row in x])


@torch.no_grad()
def _scale_members(grads: list[torch.Tensor], scale: torch.Tensor) -> None:
    """grads of member k ← grads × scale[k]; scale (K,) float64, applied in the grads' dtype."""
    s = scale.to(grads[0].dtype)
    for g in grads:
        g.mul_(s.view(-1, *[1] * (g.dim() - 1)))


@dataclass
class HeldOut:
    """Each member's fixed held-out set, in chunks of at most ``batch_size`` sequences stacked
    over the members: a list of (x (K, L, b, D), y (K, S, b, …)) on the device."""

    chunks: list[tuple[torch.Tensor, torch.Tensor]]

    @classmethod
    def draw(cls, task: Task, streams: list[torch.Generator], cfg, device, dtype) -> HeldOut:
        """``cfg.eval_size`` sequences per member, drawn from its own stream."""
        sizes = [
            min(cfg.batch_size, cfg.eval_size - i) for i in range(0, cfg.eval_size, cfg.batch_size)
        ]
        return cls([_stack([task.sample(n, g) for g in streams], device, dtype) for n in sizes])

    def all_inputs(self, n: int) -> torch.Tensor:
        """Every member's first n held-out input sequences, x (K, L, n, D)."""
        return self.chunks[0][0][:, :, :n]

    def keep(self, positions: list[int]) -> None:
        """Keep the members at ``positions`` (as ``Elman.keep``)."""
        self.chunks = [(x[positions], y[positions]) for x, y in self.chunks]


@dataclass
class FixedSet:
    """Each member's fixed training set (``train.train_size``), visited in epochs.

    The pool, (x (L, N, D), y (S, N, …)) per member, is drawn once by one ``task.sample(N, g)``
    from the member's training stream g; each epoch then takes a permutation of 0..N−1 from the
    same stream (``torch.randperm``) and serves it in batches of B, the last one smaller when B
    does not divide N (as Keras' ``fit``). Every member has its own pool, stream and order, and
    all members share N and B, so a member gets the same batches alone or in any stack."""

    pools: list[tuple[torch.Tensor, torch.Tensor]]
    streams: list[torch.Generator]
    orders: list[torch.Tensor | None]
    position: int = 0
    """Where in the current epoch the next batch starts (0: draw new orders)."""

    @classmethod
    def draw(cls, task: Task, streams: list[torch.Generator], cfg) -> FixedSet:
        pools = [task.sample(cfg.train_size, g) for g in streams]
        return cls(pools, streams, [None] * len(streams))

    @property
    def size(self) -> int:
        """N."""
        return self.pools[0][0].shape[1]

    def next_batch(self, active: list[int], batch_size: int) -> list:
        """The next batch, (x (L, b, D), y (S, b, …)), of each member in ``active`` (indices
        into the runs)."""
        if self.position == 0:  # a new epoch: a fresh order per member
            for k in active:
                g = self.streams[k]
                self.orders[k] = torch.randperm(self.size, generator=g, device=g.device)
        end = min(self.position + batch_size, self.size)
        out = []
        for k in active:
            idx = self.orders[k][self.position : end]
            x, y = self.pools[k]
            out.append((x[:, idx], y[:, idx]))
        self.position = end % self.size
        return out

    def held_out(self, batch_size: int, device, dtype) -> HeldOut:
        """The whole pool as an evaluation set (``train_set/*``), in chunks of ``batch_size``."""
        N = self.size
        chunks = []
        for i in range(0, N, batch_size):
            part = [(x[:, i : i + batch_size], y[:, i : i + batch_size]) for x, y in self.pools]
            chunks.append(_stack(part, device, dtype))
        return HeldOut(chunks)


@torch.no_grad()
def evaluate(task: Task, model: Stacked, held_out: HeldOut) -> list[dict[str, float]]:
    """Per member: mean loss (and accuracy) over its fixed held-out set; loss_ratio = loss /
    baseline."""
    losses, accs = [], []
    for x, y in held_out.chunks:
        out = model(x)
        losses.append(_per_member(task.loss, out, y))  # (K, B)
        if task.classification:
            accs.append(_per_member(task.accuracy, out, y))
    loss = _per_member(lambda row, _: row.mean(), torch.cat(losses, 1), losses[0]).tolist()
    acc = (
        _per_member(lambda row, _: row.mean(), torch.cat(accs, 1), accs[0]).tolist()
        if accs
        else None
    )
    out = []
    for k, value in enumerate(loss):
        metrics = {names.EVAL_LOSS: value, names.EVAL_LOSS_RATIO: value / task.baseline}
        if acc is not None:
            metrics[names.EVAL_ACCURACY] = acc[k]
        out.append(metrics)
    return out


def _stack(batches: list, device, dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """Members' (x, y) batches → x (K, L, B, D), y (K, S, B, …) on the device."""
    x = torch.stack([b[0] for b in batches]).to(dtype=dtype)
    y = torch.stack([b[1] for b in batches])
    y = y.to(dtype=dtype if y.is_floating_point() else y.dtype)
    if torch.device(device).type == "cuda":  # from pinned memory, so the host does not wait:
        # a copy from pageable memory first waits for everything queued on the device
        x, y = x.pin_memory(), y.pin_memory()
        return x.to(device, non_blocking=True), y.to(device, non_blocking=True)
    return x.to(device), y.to(device)
