"""The one training loop. It yields measurements; tracking is somebody else's job.

``train(run)`` is a generator of :class:`Measurement` — one per training step s = 0..steps.
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
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np
import torch

from rnnlab import probes, theory
from rnnlab.config import RunConfig, TrainConfig
from rnnlab.rnn import RNNModel
from rnnlab.tasks import Task, make_task

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


def build(run: RunConfig, device: torch.device | None = None) -> tuple[Task, RNNModel]:
    """The task and the freshly initialised model of a run config."""
    task = make_task(**run.task.model_dump())
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
    cfg = run.train
    device = resolve_device(cfg.device)
    dtype = getattr(torch, cfg.dtype)
    task, model = build(run, device)
    params = list(model.parameters())
    optimizer = OPTIMIZERS[cfg.optimizer](params, cfg)
    batches, evals = stream(run.seed, "train"), stream(run.seed, "eval")
    eval_set = [
        _to(task.sample(n, evals), device, dtype) for n in _chunks(cfg.eval_size, cfg.batch_size)
    ]

    for step in range(cfg.steps + 1):
        probing = step % run.probe.every == 0 or step == cfg.steps
        x, y = _to(task.sample(cfg.batch_size, batches), device, dtype)
        model.rnn.record_hidden_grads = probing
        out = model(x)  # (S, B, O)
        loss = task.loss(out, y).mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        grads = [p.grad for p in params]
        norm = torch.nn.utils.get_total_norm(grads)  # before clipping

        values = {"train/loss": loss.detach(), "grad/norm": norm}
        acc = task.accuracy(out.detach(), y)
        if acc is not None:
            values["train/accuracy"] = acc.mean()
        if probing:
            values |= probes.parameter_grad_norms(model)
        metrics = dict(
            zip(
                values,
                torch.stack([v.double().cpu() for v in values.values()]).tolist(),
                strict=True,
            )
        )

        clipping = cfg.clip_norm is not None and metrics["grad/norm"] > cfg.clip_norm
        if cfg.clip_norm is not None:
            metrics["grad/clipped"] = float(clipping)
        profile = None
        if probing:
            n = probes.gradient_profile(model.rnn.hidden_grad_norms, cfg.batch_size)
            profile = n.numpy()
            metrics |= probes.profile_summary(n)
            metrics |= probes.spectrum(model.rnn.weight_hh)
            metrics |= evaluate(task, model, eval_set)
            if step in (0, cfg.steps):  # theory beside measurement: first and last probe
                x_dyn = eval_set[0][0][:, :16]  # 16 held-out input trajectories
                if step == 0:
                    metrics |= theory.run_predictions(model, x_dyn)
                metrics["dyn/lyapunov_max"] = theory.lyapunov_max(model, x_dyn)
        diverged = not (
            math.isfinite(metrics["train/loss"]) and math.isfinite(metrics["grad/norm"])
        )
        if cfg.divergence_threshold is not None and metrics["grad/norm"] > cfg.divergence_threshold:
            diverged = True
        yield Measurement(step, metrics, profile, diverged)
        if diverged:
            return
        if step < cfg.steps:
            if clipping:  # Pascanu et al. (2013): rescale the gradient to norm clip_norm
                torch.nn.utils.clip_grads_with_norm_(params, cfg.clip_norm, norm)
            optimizer.step()


@torch.no_grad()
def evaluate(task: Task, model: RNNModel, eval_set: list) -> dict[str, float]:
    """Mean loss (and accuracy) over the fixed held-out set; loss_ratio = loss / baseline."""
    losses, accs = [], []
    for x, y in eval_set:
        out = model(x)
        losses.append(task.loss(out, y))
        acc = task.accuracy(out, y)
        if acc is not None:
            accs.append(acc)
    loss = float(torch.cat(losses).mean())
    metrics = {"eval/loss": loss, "eval/loss_ratio": loss / task.baseline}
    if accs:
        metrics["eval/accuracy"] = float(torch.cat(accs).mean())
    return metrics


def _chunks(total: int, size: int) -> list[int]:
    return [min(size, total - i) for i in range(0, total, size)]


def _to(batch, device, dtype):
    x, y = batch
    return x.to(device, dtype), y.to(device, dtype if y.is_floating_point() else y.dtype)
