"""The one training loop. It yields measurements; tracking is somebody else's job.

``train(run)`` is a generator of :class:`Measurement` — one per training step s = 0..steps.
It is ``train_ensemble([run])``: the same loop trains several runs as one stacked model
(``rnnlab.ensemble``), yielding (member, measurement) pairs with each member's numbers as if
it trained alone.
Measurement s is taken on step s's batch *before* its update (so step 0 describes the network
at initialisation); the last one (s = steps) is taken after the final update and makes no
update. Every ``probe.every`` steps, and at the first and last, it also carries the gradient
profile n_t (see ``rnnlab.probes``), parameter gradient norms, the W_hh spectrum and
held-out evaluation.

Metrics (every step): ``train/loss``, ``train/accuracy`` (classification tasks), ``grad/norm``
(global gradient norm before clipping), and with ``train.clip_norm`` set, ``grad/clipped`` (1 if
clipping fired).
Probe steps add: ``eval/loss``, ``eval/accuracy``, ``eval/loss_ratio`` (eval loss / the task's
baseline), ``grad/<parameter>``, ``weights/W_hh_radius``, ``weights/W_hh_sigma_max``,
``grad_h/slope``, ``grad_h/log10_ratio``, ``grad_h/fit_points``, ``grad_h/underflow``.
Step 0 adds the mean-field predictions ``theory/slope``, ``theory/chi1``,
``theory/depth_scale``, ``theory/q_star`` (and the inputs they used, ``theory/q_in``,
``theory/bias_var``); steps 0 and last add ``dyn/lyapunov_max``
(see ``rnnlab.theory``).

A non-finite loss or gradient norm, or a norm above ``train.divergence_threshold``, ends the run
at that step as *diverged*: its measurement is yielded (inf and nan included, they are data)
and no update is made with it.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
import torch

from rnnlab import probes, theory
from rnnlab.config import RunConfig
from rnnlab.ensemble import Ensemble
from rnnlab.optim import OPTIMIZERS
from rnnlab.rnn import RNNModel, check_reproducible
from rnnlab.tasks import Task, make_task


@dataclass
class Measurement:
    """What one training step measured."""

    step: int
    metrics: dict[str, float]
    profile: np.ndarray | None = None
    """n_t for t = 1..L (float64, index t−1), on probe steps."""
    diverged: bool = False


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


def build(
    run: RunConfig, device: torch.device | None = None, task: Task | None = None
) -> tuple[Task, RNNModel]:
    """The task and the freshly initialised model of a run config."""
    task = task or make_task(**run.task.model_dump())
    m = run.model
    model = RNNModel(
        task.input_size,
        m.hidden_size,
        task.output_size,
        task.readout,
        activation=m.activation,
        init=m.init,
        gain=m.gain,
        generator=stream(run.seed, "init"),
        dtype=getattr(torch, run.train.dtype),
    )
    return task, model.to(device or resolve_device(run.train.device))


def train(run: RunConfig) -> Iterator[Measurement]:
    """Train one network, yielding a :class:`Measurement` per step (see the module docstring)."""
    for _, m in train_ensemble([run]):
        yield m


def train_ensemble(runs: list[RunConfig]) -> Iterator[tuple[int, Measurement]]:
    """Train runs that share an ``ensemble_key`` as one stacked model (``rnnlab.ensemble``).

    Yields (index into ``runs``, :class:`Measurement`): every member still training, in
    order, each step. Each member sees exactly the batches, initialisation, clipping and
    learning rate it would alone. A diverged member's last measurement is yielded and it is
    dropped before the update; the others go on.
    """
    keys = {r.ensemble_key for r in runs}
    if len(keys) != 1:
        raise ValueError("an ensemble's runs must agree on everything but config.MEMBER_KEYS")
    device = resolve_device(runs[0].train.device)
    with _one_thread(device):
        yield from _train(runs, device)


@contextmanager
def _one_thread(device: torch.device):
    """Train on one CPU thread: ATen splits work between threads at points that depend on the
    thread count, which changes the order of float additions, so a run's bits would depend on
    how many workers share the machine. Parallelism comes from workers (one run each)."""
    if device.type != "cpu":
        yield
        return
    check_reproducible()
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def _train(runs: list[RunConfig], device: torch.device) -> Iterator[tuple[int, Measurement]]:
    cfg = runs[0].train  # the shared settings
    dtype = getattr(torch, cfg.dtype)
    task = make_task(**runs[0].task.model_dump())
    model = Ensemble([build(r, device, task)[1] for r in runs])
    optimizer = OPTIMIZERS[cfg.optimizer](list(model.parameters()), momentum=cfg.momentum)
    batches = [stream(r.seed, "train") for r in runs]
    eval_streams = [stream(r.seed, "eval") for r in runs]
    eval_set = [  # chunks of the fixed held-out set, stacked over the members
        _stack([task.sample(n, g) for g in eval_streams], device, dtype)
        for n in _chunks(cfg.eval_size, cfg.batch_size)
    ]
    active = list(range(len(runs)))  # index into runs of each member still in the stack

    for step in range(cfg.steps + 1):
        probing = step % runs[0].probe.every == 0 or step == cfg.steps
        x, y = _stack([task.sample(cfg.batch_size, batches[k]) for k in active], device, dtype)
        model.record_hidden_grads = probing
        out = model(x)  # (K, S, B, O)
        loss = _per_member(lambda o, t: task.loss(o, t).mean(), out, y)  # (K,) batch means
        for p in model.parameters():
            p.grad = None
        loss.sum().backward()  # members share no parameter: each gets its own loss's gradient
        params = dict(model.named_parameters())
        values = {
            "train/loss": loss.detach(),
            "grad/norm": _norms(torch.cat([p.grad.flatten(1) for p in params.values()], 1)),
        }
        if task.classification:
            values["train/accuracy"] = _per_member(
                lambda o, t: task.accuracy(o, t).mean(), out.detach(), y
            )
        if probing:  # ‖∂L/∂θ‖₂ per parameter and member
            values |= {f"grad/{n.removeprefix('rnn.')}": _norms(p.grad) for n, p in params.items()}
        table = torch.stack([v.double() for v in values.values()]).cpu().tolist()  # one sync
        metrics = [dict(zip(values, column, strict=True)) for column in zip(*table, strict=True)]

        if probing:
            profiles = probes.gradient_profile(model.hidden_grad_norms, cfg.batch_size)
            evals = evaluate(task, model, eval_set)
        kept, scale = [], []
        for j, k in enumerate(active):
            m, c = metrics[j], runs[k].train
            clipping = c.clip_norm is not None and m["grad/norm"] > c.clip_norm
            if c.clip_norm is not None:
                m["grad/clipped"] = float(clipping)
            profile = None
            if probing:
                profile = profiles[j].numpy()
                m |= probes.profile_summary(profiles[j])
                m |= probes.spectrum(model.rnn["weight_hh"][j])
                m |= evals[j]
                if step in (0, cfg.steps):  # theory beside measurement: first and last probe
                    member, x_dyn = model.member(j), eval_set[0][0][j][:, :16]  # 16 held-out
                    if step == 0:  # input trajectories
                        m |= theory.run_predictions(member, x_dyn)
                    m["dyn/lyapunov_max"] = theory.lyapunov_max(member, x_dyn)
            diverged = not (math.isfinite(m["train/loss"]) and math.isfinite(m["grad/norm"]))
            if c.divergence_threshold is not None and m["grad/norm"] > c.divergence_threshold:
                diverged = True
            yield k, Measurement(step, m, profile, diverged)
            if not diverged:
                kept.append(j)
                # Pascanu et al. (2013): rescale the gradient to norm clip_norm
                scale.append(c.clip_norm / (m["grad/norm"] + 1e-6) if clipping else 1.0)
        if not kept or step == cfg.steps:
            return
        if len(kept) < len(active):  # drop the diverged: they stop, the others go on
            active = [active[j] for j in kept]
            model.keep(kept)
            optimizer.keep(kept)
            optimizer.set_params(list(model.parameters()))
            eval_set = [(ex[kept], ey[kept]) for ex, ey in eval_set]
        grads = [p.grad for p in model.parameters()]
        if any(s != 1.0 for s in scale):
            _scale_members(grads, scale)
        lrs = [runs[k].train.lr for k in active]
        optimizer.step(torch.tensor(lrs, dtype=torch.float64, device=device))


def _per_member(fn, out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """fn(out_k, y_k) for each member k of a stack: (K, S, B, …) → (K, …).

    Every per-member number is computed by its own call on exactly the shapes it has alone:
    a reduction over several members' data may sum in another order than over one member's
    (it did for the copy task's loss at B = 2), and a member's bits must not depend on its
    stack (tests/test_reproducibility.py)."""
    return torch.stack([fn(o, t) for o, t in zip(out, y, strict=True)])


def _norms(x: torch.Tensor) -> torch.Tensor:
    """‖x_k‖₂ per member of a (K, …) tensor, each by its own reduction (see _per_member)."""
    return torch.stack([torch.linalg.vector_norm(row) for row in x])


@torch.no_grad()
def _scale_members(grads: list[torch.Tensor], scale: list[float]) -> None:
    s = torch.tensor(scale, dtype=grads[0].dtype, device=grads[0].device)
    for g in grads:
        g.mul_(s.view(-1, *[1] * (g.dim() - 1)))


@torch.no_grad()
def evaluate(task: Task, model: Ensemble, eval_set: list) -> list[dict[str, float]]:
    """Per member: mean loss (and accuracy) over its fixed held-out set; loss_ratio = loss /
    baseline."""
    losses, accs = [], []
    for x, y in eval_set:
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
        metrics = {"eval/loss": value, "eval/loss_ratio": value / task.baseline}
        if acc is not None:
            metrics["eval/accuracy"] = acc[k]
        out.append(metrics)
    return out


def _chunks(total: int, size: int) -> list[int]:
    return [min(size, total - i) for i in range(0, total, size)]


def _stack(batches: list, device, dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """Members' (x, y) batches → x (K, L, B, D), y (K, S, B, …) on the device."""
    x = torch.stack([b[0] for b in batches]).to(device, dtype)
    y = torch.stack([b[1] for b in batches])
    return x, y.to(device, dtype if y.is_floating_point() else y.dtype)
