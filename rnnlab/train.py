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

import functools
import hashlib
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np
import torch

from rnnlab import probes, theory
from rnnlab.config import RunConfig, TrainConfig
from rnnlab.ensemble import Ensemble
from rnnlab.rnn import RNNModel
from rnnlab.tasks import Task, make_task

# Each updates θ ← θ − lr·u with u independent of lr: ensembles rely on it to give members
# their own learning rates (``_interpolate``).
OPTIMIZERS: dict[str, Callable[[list, TrainConfig], torch.optim.Optimizer]] = {
    "sgd": lambda params, c: torch.optim.SGD(params, lr=c.lr, momentum=c.momentum),
    "adam": lambda params, c: torch.optim.Adam(params, lr=c.lr),
    "rmsprop": lambda params, c: torch.optim.RMSprop(params, lr=c.lr, momentum=c.momentum),
}


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
    cfg = runs[0].train  # the shared settings
    device = resolve_device(cfg.device)
    dtype = getattr(torch, cfg.dtype)
    task = make_task(**runs[0].task.model_dump())
    model = Ensemble([build(r, device, task)[1] for r in runs])
    lr = max(r.train.lr for r in runs)  # the optimizer's; members rescale their step below
    make_optimizer = functools.partial(
        OPTIMIZERS[cfg.optimizer], c=cfg.model_copy(update={"lr": lr})
    )
    optimizer = make_optimizer(list(model.parameters()))
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
        loss = _per_member(task.loss, out, y).mean(1)  # (K,): each member's own batch mean
        optimizer.zero_grad(set_to_none=True)
        loss.sum().backward()  # members share no parameter: each gets its own loss's gradient
        params = dict(model.named_parameters())
        per_param = torch.stack(  # ‖∂L/∂θ‖₂ per parameter and member, (P, K)
            [torch.linalg.vector_norm(p.grad.flatten(1), dim=1) for p in params.values()]
        )
        values = {
            "train/loss": loss.detach(),
            "grad/norm": torch.linalg.vector_norm(per_param, dim=0),
        }
        acc = _per_member(task.accuracy, out.detach(), y) if task.classification else None
        if acc is not None:
            values["train/accuracy"] = acc.mean(1)
        if probing:
            values |= {
                f"grad/{n.removeprefix('rnn.')}": v for n, v in zip(params, per_param, strict=True)
            }
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
            optimizer = _keep(model, optimizer, make_optimizer, kept)
            eval_set = [(ex[kept], ey[kept]) for ex, ey in eval_set]
        grads = [p.grad for p in model.parameters()]
        if any(s != 1.0 for s in scale):
            _scale_members(grads, scale)
        lrs = [runs[k].train.lr / lr for k in active]
        before = (
            [p.detach().clone() for p in model.parameters()] if any(r != 1 for r in lrs) else None
        )
        optimizer.step()
        if before is not None:  # θ ← θ + (lr_k / lr)(θ′ − θ): each member's own learning rate
            _interpolate(before, list(model.parameters()), lrs)


def _per_member(fn, out: torch.Tensor, y: torch.Tensor) -> torch.Tensor | None:
    """A task's per-sequence function over stacked members: (K, S, B, …) → (K, B).

    The members' batches are laid side by side as one batch of K·B sequences."""
    K, S, B = out.shape[:3]
    result = fn(
        out.transpose(0, 1).reshape(S, K * B, *out.shape[3:]),
        y.transpose(0, 1).reshape(S, K * B, *y.shape[3:]),
    )
    return None if result is None else result.view(K, B)


@torch.no_grad()
def _scale_members(grads: list[torch.Tensor], scale: list[float]) -> None:
    s = torch.tensor(scale, dtype=grads[0].dtype, device=grads[0].device)
    for g in grads:
        g.mul_(s.view(-1, *[1] * (g.dim() - 1)))


@torch.no_grad()
def _interpolate(before: list[torch.Tensor], params: list[torch.Tensor], weights: list[float]):
    """Each update is lr·u with u independent of lr for every optimizer in OPTIMIZERS, so
    scaling member k's displacement by lr_k / lr gives exactly its own learning rate."""
    w = torch.tensor(weights, dtype=params[0].dtype, device=params[0].device)
    for b, p in zip(before, params, strict=True):
        p.copy_(b.lerp_(p, w.view(-1, *[1] * (p.dim() - 1))))


def _keep(model: Ensemble, optimizer, make_optimizer, kept: list[int]):
    """Shrink the ensemble to the members at positions ``kept``, and the optimizer with it."""
    old = list(model.parameters())
    state = optimizer.state_dict()
    state["state"] = {  # per-member state (moments, momentum) has the parameter's shape
        i: {
            name: v[kept] if torch.is_tensor(v) and v.shape == old[i].shape else v
            for name, v in s.items()
        }
        for i, s in state["state"].items()
    }
    model.keep(kept)
    optimizer = make_optimizer(list(model.parameters()))
    optimizer.load_state_dict(state)
    return optimizer


@torch.no_grad()
def evaluate(task: Task, model: Ensemble, eval_set: list) -> list[dict[str, float]]:
    """Per member: mean loss (and accuracy) over its fixed held-out set; loss_ratio = loss /
    baseline."""
    losses, accs = [], []
    for x, y in eval_set:
        out = model(x)
        losses.append(_per_member(task.loss, out, y))
        acc = _per_member(task.accuracy, out, y) if task.classification else None
        if acc is not None:
            accs.append(acc)
    loss = torch.cat(losses, dim=1).mean(1).tolist()
    acc = torch.cat(accs, dim=1).mean(1).tolist() if accs else None
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
