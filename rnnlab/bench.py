"""``make bench``: the cost of exact per-timestep gradients, against torch.nn.RNN.

For each shape (T, B, H) it times a full training step — forward, backward, Adam — of

  (a) ``torch.nn.RNN`` (PyTorch's fused path; per-step gradients are not available),
  (b) the naive autograd loop with ``retain_grad`` on every h_t (``autograd_reference``),
  (c) rnnlab's ``Elman`` (one network, K = 1) with the full profile ‖∂L/∂h_t‖ recorded,

each followed by a linear readout on the last step (its own, for (c)) and MSE loss. (a) and
(c) are run interleaved (a, c, a, c, …) so drifts in machine load hit both alike, then (b)
alone (``_timed``); the medians are reported as ratios to (a). Also: (c)'s achieved GFLOP/s
against a large-matmul peak measured in the same run, and the peak memory of one step of (a)
and (c) (CUDA: the allocator's peak; CPU: the profiler's allocation timeline).

Then the gated cells (``model.cell`` lstm, gru): a training step of ``torch.nn.LSTM``/``GRU``
(a), the autograd loop of PyTorch's own cells with ``retain_grad`` (b, ``gated_reference``) and
``rnnlab.model.gated.Gated`` recording every ‖∂L/∂h_t‖ and ‖∂L/∂c_t‖ (c), as ratios to (a).

Then stacks (``rnnlab.model.elman.Elman`` with K members): eight networks trained one after another against the
same eight as one stack, at a few shapes; what dyn/lyapunov_max costs at a probe (one network,
and per member of a stack of 16) against a training step, as its share of a default-sweep run
(the issue's bound: ≤ 5 % on a GPU); and the sweep throughput: the wall time of the default
sweep (``make sweep``, experiments/vanishing.yaml) run as a user runs it, each into a fresh
store, with ``train.ensemble`` off, auto (the default) and 16 (every family stacked),
interleaved over two rounds, reported as median ratios to off (not with ``--quick``). Everything
is printed and written to ``results/bench.json``.

On CUDA it also names the card, adds the shape (1000, 1024, 1024), times stacks of K = 1, 16
and 64 networks at (100, 64, 64) (per member, one after another vs stacked), and times the BPTT
recursions alone (forward + backward, no readout or optimizer) for each backend against cuDNN:
``triton`` (rnnlab/model/backends/triton_elman.py, for several warp counts) and ``cpp``.
``--backend`` forces rnnlab's backend for the whole run (``RNNLAB_BACKEND``).

    python -m rnnlab.bench [--quick] [--device cpu|cuda] [--backend triton|cpp|python]
                           [--no-sweep] [--out results/bench.json]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path
from unittest import mock

import torch
from torch import nn

from rnnlab.model import activations
from rnnlab.model.elman import Elman, MemberInit
from rnnlab.model.gated import Gated

SHAPES = [(100, 64, 64), (1000, 32, 128), (1000, 64, 256), (5000, 16, 64)]
CUDA_SHAPES = [*SHAPES, (1000, 1024, 1024)]
QUICK_SHAPES = [(100, 64, 64), (200, 32, 128)]
D = 2  # input size of the adding problem


def autograd_reference(x, weight_ih, weight_hh, bias, activation: str) -> list[torch.Tensor]:
    """The plain autograd loop: h_t = φ(W_xh x_t + W_hh h_{t−1} + b), ``retain_grad`` on each h_t.

    After backward, ``hs[t].grad`` is ∂L/∂h_t. The independent reference for tests, and
    contender (b) of the benchmark. Per-step inputs come from one ``unbind``: indexing a
    tensor inside the loop would make the backward pass O(T²).
    """
    phi = activations.get(activation).fn
    hs, h = [], None
    for x_t in x.unbind(0):
        z = torch.addmm(bias, x_t, weight_ih.T)
        if h is not None:
            z = z + h @ weight_hh.T
        h = phi(z)
        h.retain_grad()
        hs.append(h)
    return hs


def gated_reference(x, weight_ih, weight_hh, bias_ih, bias_hh, cell: str):
    """The plain autograd loop of a gated cell: PyTorch's own ``torch.lstm_cell`` /
    ``torch.gru_cell`` (``nn.LSTMCell``/``nn.GRUCell``) step by step, ``retain_grad`` on each
    h_t (and c_t). Returns (hs, cs) (cs empty for the GRU); after backward ``hs[t].grad`` is
    ∂L/∂h_t and ``cs[t].grad`` ∂L/∂c_t. The independent reference of
    ``rnnlab.model.gated`` in the tests, and contender (b) of its benchmark."""
    B, H = x.shape[1], weight_hh.shape[1]
    h = c = x.new_zeros(B, H)
    hs, cs = [], []
    for x_t in x.unbind(0):
        if cell == "lstm":
            h, c = torch.lstm_cell(x_t, (h, c), weight_ih, weight_hh, bias_ih, bias_hh)
            c.retain_grad()
            cs.append(c)
        else:
            h = torch.gru_cell(x_t, h, weight_ih, weight_hh, bias_ih, bias_hh)
        h.retain_grad()
        hs.append(h)
    return hs, cs


class _Naive(nn.Module):
    def __init__(self, model: Elman):
        super().__init__()
        w = model.member(0)
        self.weight_ih, self.weight_hh, self.bias = (
            nn.Parameter(p.clone()) for p in (w.weight_ih, w.weight_hh, w.bias)
        )

    def forward(self, x):
        return autograd_reference(x, self.weight_ih, self.weight_hh, self.bias, "tanh")[-1]


def _ours(H: int, device, output_size: int | None = 1) -> Elman:
    """Contender (c): one tanh network (K = 1), W_hh = Q, with a readout of the last step."""
    member = MemberInit("orthogonal", 1.0, torch.Generator().manual_seed(0))
    return Elman(D, H, output_size, activation="tanh", members=[member]).to(device)


def _contenders(T, B, H, device):
    ours = _ours(H, device)
    fused = nn.RNN(D, H, nonlinearity="tanh").to(device)
    naive = _Naive(ours).to(device)
    readouts = {name: nn.Linear(H, 1).to(device) for name in "ab"}
    readouts["c"] = nn.Identity()  # ours reads out itself

    def step_fn(name, model, last):
        params = list(model.parameters()) + list(readouts[name].parameters())
        opt = torch.optim.Adam(params, lr=1e-4, capturable=name == "g")

        def step(x, y):
            opt.zero_grad(set_to_none=True)
            loss = (readouts[name](last(model, x)) - y).pow(2).mean()
            loss.backward()
            if name in "cg":  # the full profile, as the trainer reads it
                assert model.hidden_grad_norms is not None
            opt.step()

        return step

    steps = {
        "a": step_fn("a", fused, lambda m, x: m(x)[0][-1]),
        "b": step_fn("b", naive, lambda m, x: m(x)),
        "c": step_fn("c", ours, lambda m, x: m(x[None])[0, -1]),
    }
    if device.type == "cuda":  # (c) replayed from a CUDA graph, as the trainer's steps are
        readouts["g"] = nn.Identity()
        steps["g"] = _graphed(step_fn("g", _ours(H, device), lambda m, x: m(x[None])[0, -1]))
    return steps


def _graphed(step):
    """step(x, y) captured in a CUDA graph at its first call, as the trainer captures its steps
    (``rnnlab.train``: warm-up on its side stream, three calls here as PyTorch's notes do);
    every call then copies x, y in and replays it."""
    from rnnlab.train import _cuda_capture, _side_stream

    captured = []

    def replay(x, y):
        if not captured:
            static = x.clone(), y.clone()
            with _side_stream(x.device):
                for _ in range(3):
                    step(*static)
            graph_replay, _ = _cuda_capture(lambda: step(*static))
            captured.extend([graph_replay, *static])
        graph_replay, sx, sy = captured
        sx.copy_(x)
        sy.copy_(y)
        graph_replay()

    return replay


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def _interleaved(steps: dict, x, y, device, repeats: int) -> dict[str, float]:
    """Median seconds of each contender's step(x, y), run interleaved after two warm-ups."""
    times = {k: [] for k in steps}
    for _ in range(2):  # warm-up
        for f in steps.values():
            f(x, y)
    for _ in range(repeats):
        for k, f in steps.items():
            _sync(device)
            t0 = time.perf_counter()
            f(x, y)
            _sync(device)
            times[k].append(time.perf_counter() - t0)
    return {k: statistics.median(v) for k, v in times.items()}


def _timed(steps: dict, x, y, device, repeats: int) -> dict[str, float]:
    """Medians of (a) and (c) interleaved (and on CUDA (c) replayed from a CUDA graph), then
    of (b) on its own: run between them, (b)'s
    retain_grad loop slowed the host-bound (c) on an H200 ((1000, 32, 128), one process:
    4.47 ms a step interleaved with it, 2.94 ms without)."""
    med = _interleaved({k: steps[k] for k in "acg" if k in steps}, x, y, device, repeats)
    return med | _interleaved({"b": steps["b"]}, x, y, device, repeats)


def time_shape(T, B, H, device, repeats: int) -> dict:
    x = torch.rand(T, B, D, device=device)
    y = torch.rand(B, 1, device=device)
    med = _timed(_contenders(T, B, H, device), x, y, device, repeats)
    flops = 6 * T * B * H * H + 4 * T * B * D * H  # forward, δ recursion, ∂W_hh, ∂W_xh
    row = {
        "T": T,
        "B": B,
        "H": H,
        "device": device.type,
        **{f"{k}_ms": 1e3 * v for k, v in med.items()},
        "b/a": med["b"] / med["a"],
        "c/a": med["c"] / med["a"],
        "c_gflops": flops / med["c"] / 1e9,
    }
    if "g" in med:  # CUDA: (c) replayed from a CUDA graph
        row |= {"g_ms": 1e3 * med["g"], "g/a": med["g"] / med["a"]}
    return row


GATED_SHAPES = [(100, 64, 64), (1000, 32, 128)]
QUICK_GATED_SHAPES = [(100, 64, 64)]


def time_gated(cell: str, T: int, B: int, H: int, device, repeats: int) -> dict:
    """A training step of a gated cell (forward, backward, Adam; readout of the last step, MSE)
    for (a) ``torch.nn.LSTM``/``GRU``, (b) ``gated_reference``'s autograd loop with
    retain_grad, (c) rnnlab's ``Gated`` with every ‖∂L/∂h_t‖ (and ‖∂L/∂c_t‖) recorded."""
    ours = Gated(D, H, 1, cell=cell, members=[MemberInit()]).to(device)
    fused = {"lstm": nn.LSTM, "gru": nn.GRU}[cell](D, H).to(device)
    naive = nn.ParameterList(
        nn.Parameter(p[0].detach().clone())
        for p in (ours.weight_ih, ours.weight_hh, ours.bias_ih, ours.bias_hh)
    )
    readouts = {k: nn.Linear(H, 1).to(device) for k in "ab"} | {"c": nn.Identity()}
    last = {
        "a": lambda x: fused(x)[0][-1],
        "b": lambda x: gated_reference(x, *naive, cell)[0][-1],
        "c": lambda x: ours(x[None])[0, -1],
    }
    models = {"a": fused, "b": naive, "c": ours}

    def step_fn(name):
        opt = torch.optim.Adam([*models[name].parameters(), *readouts[name].parameters()], lr=1e-4)

        def step(x, y):
            opt.zero_grad(set_to_none=True)
            (readouts[name](last[name](x)) - y).pow(2).mean().backward()
            if name == "c":
                assert ours.hidden_grad_norms is not None
            opt.step()

        return step

    x, y = torch.rand(T, B, D, device=device), torch.rand(B, 1, device=device)
    med = _timed({k: step_fn(k) for k in "abc"}, x, y, device, repeats)
    return {
        "cell": cell,
        "T": T,
        "B": B,
        "H": H,
        **{f"{k}_ms": 1e3 * v for k, v in med.items()},
        "b/a": med["b"] / med["a"],
        "c/a": med["c"] / med["a"],
    }


def matmul_peak(device, n: int = 2048) -> float:
    a, b = torch.rand(n, n, device=device), torch.rand(n, n, device=device)
    for _ in range(2):
        a @ b
    best = float("inf")
    for _ in range(5):
        _sync(device)
        t0 = time.perf_counter()
        a @ b
        _sync(device)
        best = min(best, time.perf_counter() - t0)
    return 2 * n**3 / best / 1e9


@contextlib.contextmanager
def _quiet_stderr():
    """Silence file descriptor 2 (C++ logging bypasses sys.stderr) for the duration."""
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as null:
            os.dup2(null.fileno(), 2)
            yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def peak_memory_mb(kind: str, T: int, B: int, H: int, device) -> float:
    """Peak memory allocated during one training step of contender ``kind`` (after a warm-up
    step, so optimizer state and parameters are excluded): the CUDA allocator's peak, or on the
    CPU the peak of the profiler's allocation timeline."""
    step = _contenders(T, B, H, device)[kind]
    x, y = torch.rand(T, B, D, device=device), torch.rand(B, 1, device=device)
    step(x, y)
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        step(x, y)
        torch.cuda.synchronize()
        return (torch.cuda.max_memory_allocated() - base) / 2**20
    from torch.profiler import ProfilerActivity, profile

    with (
        _quiet_stderr(),  # the profiler's own log lines (USDT: …, CPUAllocator warnings)
        profile(
            activities=[ProfilerActivity.CPU],
            profile_memory=True,
            record_shapes=True,
            with_stack=True,
        ) as prof,
    ):
        step(x, y)
    with tempfile.TemporaryDirectory() as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # deprecated for CUDA; the CPU path stays
        path = Path(tmp) / "timeline.json"
        prof.export_memory_timeline(str(path), device="cpu")
        _, sizes = json.loads(path.read_text())
    return max(sum(s) for s in sizes) / 2**20


STACK_SHAPES = [(10, 64, 64), (100, 64, 64), (100, 8, 64), (100, 16, 32), (100, 64, 16)]
STACK_K = 8
CUDA_STACKS = [(100, 64, 64, K) for K in (1, 16, 64)]  # (L, B, H, K)


def time_stack(L: int, B: int, H: int, device, K: int = STACK_K, steps: int = 20) -> dict:
    """K tanh networks trained by ``train_ensemble`` one after another, then as one stack."""
    from rnnlab.config import RunConfig
    from rnnlab.train import train_ensemble

    runs = [
        RunConfig.model_validate(
            {
                "task": {"name": "adding", "seq_len": L},
                "model": {"hidden_size": H},
                "train": {"steps": steps, "batch_size": B, "eval_size": B, "device": device.type},
                "probe": {"every": 10 * steps},  # probes at the first and last step only
                "seed": seed,
            }
        )
        for seed in range(K)
    ]

    def timed(group) -> float:
        _sync(device)
        t0 = time.perf_counter()
        for _ in train_ensemble(group):
            pass
        _sync(device)
        return time.perf_counter() - t0

    timed(runs[:1])  # warm-up
    alone = sum(timed([r]) for r in runs)
    stacked = timed(runs)
    row = {
        "L": L,
        "B": B,
        "H": H,
        "K": K,
        "alone_s": alone,
        "stacked_s": stacked,
        "alone_per_member_s": alone / K,
        "stacked_per_member_s": stacked / K,
        "speedup": alone / stacked,
    }
    if device.type == "cuda":  # what replaying the steps from CUDA graphs buys the stack
        from rnnlab.train import GRAPHS

        before = os.environ.get(GRAPHS)
        os.environ[GRAPHS] = "0"
        try:
            row["stacked_no_graphs_s"] = timed(runs)
        finally:
            if before is None:
                del os.environ[GRAPHS]
            else:
                os.environ[GRAPHS] = before
    return row


LYAPUNOV_LENGTHS = [10, 50, 100, 200]
"""The default sweep's sequence lengths (experiments/vanishing.yaml: B = H = 64, 300 steps,
dyn/lyapunov_max at the first and last probe)."""


def time_lyapunov(L: int, device, K: int = 16, steps: int = 300, repeats: int = 5) -> dict:
    """dyn/lyapunov_max at one probe (``theory.lyapunov_max_stacked``: 16 trajectories, H = 64,
    tanh, float64, read back as training reads it) for one network and per member of a stack
    of K, against a training step at (L, 64, 64); ``share``: the two probes' part of a run of
    ``steps`` steps, one network."""
    from rnnlab.measure import theory
    from rnnlab.train import THEORY_INPUTS

    H = 64
    w = _ours(H, device).member(0)
    x = torch.rand(K, L, THEORY_INPUTS, D, device=device)

    def probe(k: int) -> float:
        params = [p.expand(k, *p.shape).contiguous() for p in (w.weight_ih, w.weight_hh, w.bias)]
        times = []
        for _ in range(repeats + 1):  # the first: warm-up (Triton compiles)
            _sync(device)
            t0 = time.perf_counter()
            theory.lyapunov_max_stacked(*params, x[:k], "tanh").tolist()
            times.append(time.perf_counter() - t0)
        return statistics.median(times[1:])

    one, stack = probe(1), probe(K)
    step = _interleaved(
        {"c": _contenders(L, 64, H, device)["c"]},
        torch.rand(L, 64, D, device=device),
        torch.rand(64, 1, device=device),
        device,
        repeats,
    )["c"]
    return {
        "L": L,
        "K": K,
        "lyapunov_ms": 1e3 * one,
        "stacked_per_member_ms": 1e3 * stack / K,
        "step_ms": 1e3 * step,
        "share_%": 100 * 2 * one / (steps * step + 2 * one),
    }


KERNEL_SHAPES = [(100, 64, 64), (1000, 32, 128), (5000, 16, 64), (1000, 64, 256)]
KERNEL_TILES = (  # RNNLAB_TRITON_TILE values; "" is triton_elman's default for (B, H)
    "",
    "dot=1",
    "dot=1,warps=8",
    "dot=0,block_b=8",
    "dot=0,block_b=4",
    "dot=0,block_b=4,warps=8",
    "dot=0,block_b=2",
    "dot=0,block_b=1",
    "dot=0,block_b=1,warps=8",
    "wide=1",  # the chunked form (the only one above H = 128): chunks, sequences, warps
    "wide=1,chunk=16",
    "wide=1,chunk=32,warps=4",
    "wide=1,block_b=1,warps=8",
)
"""Above H = 128 every tile is the chunked form (the dot/sum keys do not apply there): the
default and the tiles that name ``wide=1``."""


def time_kernels(T: int, B: int, H: int, device, repeats: int = 10) -> list[dict]:
    """Forward + backward of the recursion alone (no readout, no optimizer): cuDNN's nn.RNN
    against rnnlab's ``_ElmanBPTT`` with the full profile, per backend (and per tile
    configuration for Triton, ``KERNEL_TILES``), interleaved; medians in ms and their ratio to
    cuDNN."""
    from rnnlab.model.backends import triton_elman

    ours = _ours(H, device, output_size=None)
    fused = nn.RNN(D, H, nonlinearity="tanh").to(device)
    x = torch.rand(T, B, D, device=device)
    grad = torch.rand(T, B, H, device=device)

    def run(model):
        out = model.hidden(x[None])[0] if model is ours else model(x)[0]
        out.backward(grad)

    def with_backend(name, tile=""):
        def f():
            with mock.patch.dict(os.environ, RNNLAB_BACKEND=name, RNNLAB_TRITON_TILE=tile):
                run(ours)

        return f

    contenders = {"cudnn": lambda: run(fused), "cpp": with_backend("cpp")}
    for tile in KERNEL_TILES:  # where the kernels cover the shape (with this tile's asking)
        if triton_elman.MAX_H[x.dtype] < H and tile and "wide=1" not in tile:
            continue  # above MAX_H every tile is the chunked form: a dot/sum key is the default
        with mock.patch.dict(os.environ, RNNLAB_TRITON_TILE=tile):
            covered = triton_elman.supported(x.new_empty(1, T, B, H))[0]
        if covered:
            contenders[f"triton/{tile or 'default'}"] = with_backend("triton", tile)
    times = {k: [] for k in contenders}
    failed = {}
    for _ in range(2):  # warm-up (and compilation)
        for k, f in list(contenders.items()):
            try:
                f()
            except Exception as e:  # e.g. out of resources at a warp count: report, go on
                failed[k] = str(e).strip().splitlines()[-1] if str(e).strip() else repr(e)
                del contenders[k]
    for _ in range(repeats):
        for k, f in contenders.items():
            _sync(device)
            t0 = time.perf_counter()
            f()
            _sync(device)
            times[k].append(time.perf_counter() - t0)
    base = statistics.median(times["cudnn"])
    rows = []
    for k in times:
        if k in failed:
            rows.append({"T": T, "B": B, "H": H, "backend": k, "error": failed[k]})
            continue
        med = statistics.median(times[k])
        rows.append({"T": T, "B": B, "H": H, "backend": k, "ms": 1e3 * med, "/cudnn": med / base})
    return rows


SWEEP = "experiments/vanishing.yaml"
SWEEP_SETTINGS = ("off", "auto", "16")


def time_sweep(setting: str, overrides: list[str], store: Path) -> dict:
    """Wall time of ``rnnlab sweep`` (a fresh process and store) with train.ensemble=setting."""
    cmd = [sys.executable, "-m", "rnnlab", "sweep", SWEEP, f"train.ensemble={setting}", *overrides]
    cmd += ["--tracking-uri", f"sqlite:///{store / setting}.db"]
    t0 = time.perf_counter()
    done = subprocess.run(cmd, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({done.returncode}):\n{done.stderr[-2000:]}")
    line = next(x for x in done.stdout.splitlines() if " trained in " in x)
    tracking = re.search(r"tracking ([\d.]+) s", line)
    return {
        "ensemble": setting,
        "wall_s": wall,
        "tracking_s": float(tracking.group(1)) if tracking else None,
        "summary": line.strip(),
    }


def bench_sweep(quick: bool, rounds: int) -> list[dict]:
    """Each setting ``rounds`` times, interleaved (off, auto, 16, off, …) so that drifts in
    machine speed hit all alike; the median wall time per setting, and its ratio to off."""
    overrides = ["train.steps=30"] if quick else []
    walls: dict[str, list[float]] = {s: [] for s in SWEEP_SETTINGS}
    rows = {}
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(rounds):
            for setting in SWEEP_SETTINGS:
                store = Path(tmp) / str(r)
                store.mkdir(exist_ok=True)
                rows[setting] = time_sweep(setting, overrides, store)
                walls[setting].append(rows[setting]["wall_s"])
                print(
                    f"  round {r + 1}/{rounds}  train.ensemble={setting:<4} "
                    f"{rows[setting]['wall_s']:6.1f} s wall",
                    flush=True,
                )
    off = statistics.median(walls["off"])
    out = []
    for setting in SWEEP_SETTINGS:
        med = statistics.median(walls[setting])
        out.append(
            rows[setting] | {"wall_s": med, "walls_s": walls[setting], "off/this": off / med}
        )
        print(
            f"  train.ensemble={setting:<4} median {med:6.1f} s   speed-up over off {off / med:.2f}x"
        )
    return out


def _write(
    args, device, card, peak, rows=(), stacks=(), kernels=(), sweep=None, gated=(), lyapunov=()
) -> int:
    from rnnlab.train import measure_threads

    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(
        json.dumps(
            {
                "device": device.type,
                "card": card,
                "backend": args.backend or "auto",
                "threads": torch.get_num_threads(),
                "torch": torch.__version__,
                "machine": platform.machine(),
                "matmul_peak_gflops": peak,
                "rows": list(rows),
                "gated": list(gated),
                "ensembles": list(stacks),
                "lyapunov": list(lyapunov),
                "measure_threads": measure_threads(device=device.type),
                "kernels": list(kernels),
                "sweep": sweep,
            },
            indent=2,
        )
    )
    print(f"times are medians per training step in ms; wrote {args.out}", file=sys.stderr)
    return 0


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="rnnlab.bench", description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--quick",
        action="store_true",
        help="two small shapes, few repeats, one small stack, no sweep (a smoke run: < 1 min)",
    )
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument(
        "--backend",
        choices=["triton", "cpp", "python"],
        help="force rnnlab's BPTT backend (RNNLAB_BACKEND); default: triton on CUDA where it applies",
    )
    p.add_argument(
        "--no-kernels", action="store_true", help="CUDA: skip the recursion-only timing per backend"
    )
    p.add_argument(
        "--kernels-only",
        action="store_true",
        help="CUDA: only the recursion-only timing per backend and tiling (1-3 min, compiles)",
    )
    p.add_argument(
        "--no-sweep",
        action="store_true",
        help="skip the ensemble sweep timing (about 4 min; --quick always skips it)",
    )
    p.add_argument(
        "--sweep-rounds", type=int, default=2, help="repeats of each sweep setting (default 2)"
    )
    p.add_argument("--out", type=Path, default=Path("results/bench.json"))
    args = p.parse_args(argv)
    if args.backend:  # read at every call by rnnlab.model.backends.backend; inherited by the sweeps
        os.environ["RNNLAB_BACKEND"] = args.backend
    device = torch.device(args.device)
    cuda = device.type == "cuda"
    shapes = QUICK_SHAPES if args.quick else CUDA_SHAPES if cuda else SHAPES
    if cuda:
        torch.backends.cuda.matmul.allow_tf32 = False  # fp32 means fp32 for every contender
        torch.backends.cudnn.allow_tf32 = False
    card = torch.cuda.get_device_name(device) if cuda else platform.processor() or "cpu"
    peak = matmul_peak(device)
    print(
        f"device {device.type} ({card}), {torch.get_num_threads()} threads, "
        f"torch {torch.__version__}, backend {args.backend or 'auto'}; "
        f"matmul peak {peak:.1f} GFLOP/s",
        file=sys.stderr,
    )
    kernel_rows = []
    if cuda and not args.no_kernels:  # first: the tuning data, should a time limit cut the run
        print("BPTT recursion alone (forward + backward, full profile), tanh, fp32, vs cuDNN")
        print(f"{'T':>9} {'B':>9} {'H':>9} {'backend':>30} {'ms':>9} {'/cudnn':>9}")
        for T, B, H in KERNEL_SHAPES[:1] if args.quick else KERNEL_SHAPES:
            for row in time_kernels(T, B, H, device):
                kernel_rows.append(row)
                if "error" in row:
                    print(f"{T:9d} {B:9d} {H:9d} {row['backend']:>30} failed: {row['error']}")
                else:
                    print(
                        f"{T:9d} {B:9d} {H:9d} {row['backend']:>30} {row['ms']:9.3f} "
                        f"{row['/cudnn']:9.2f}",
                        flush=True,
                    )
    if args.kernels_only:
        return _write(args, device, card, peak, kernels=kernel_rows)
    rows = []
    cols = [
        "T",
        "B",
        "H",
        "a_ms",
        "b_ms",
        "c_ms",
        "b/a",
        "c/a",
        "c_gflops",
        "%peak",
        "mem_a_mb",
        "mem_c_mb",
        "mem_c/a",
    ]
    print(" ".join(f"{c:>9}" for c in cols))
    for T, B, H in shapes:
        budget = 2e8  # fewer repeats for the bigger shapes
        repeats = 3 if args.quick else max(3, min(25, int(budget / (T * B * H))))
        row = time_shape(T, B, H, device, repeats)
        row["repeats"] = repeats
        row["%peak"] = 100 * row["c_gflops"] / peak
        row["mem_a_mb"] = peak_memory_mb("a", T, B, H, device)
        row["mem_c_mb"] = peak_memory_mb("c", T, B, H, device)
        row["mem_c/a"] = row["mem_c_mb"] / row["mem_a_mb"]
        rows.append(row)
        print(
            " ".join(f"{row[c]:9d}" if isinstance(row[c], int) else f"{row[c]:9.2f}" for c in cols)
            + (f"  (c) from a CUDA graph: {row['g_ms']:.2f} ms, {row['g/a']:.2f}" if cuda else ""),
            flush=True,
        )
    print("gated cells: (a) nn.LSTM/GRU, (b) autograd loop + retain_grad, (c) rnnlab's Gated")
    gated_cols = ("cell", "T", "B", "H", "a_ms", "b_ms", "c_ms", "b/a", "c/a")
    print(" ".join(f"{c:>9}" for c in gated_cols))
    gated = []
    for cell in ("lstm", "gru"):
        for T, B, H in QUICK_GATED_SHAPES if args.quick else GATED_SHAPES:
            repeats = 3 if args.quick else max(3, min(15, int(5e7 / (T * B * H))))
            row = time_gated(cell, T, B, H, device, repeats)
            gated.append(row)
            print(
                " ".join(
                    f"{row[c]:>9}" if isinstance(row[c], int | str) else f"{row[c]:9.2f}"
                    for c in gated_cols
                ),
                flush=True,
            )
    if cuda:
        stack_cases = CUDA_STACKS[:2] if args.quick else CUDA_STACKS
    else:
        stack_cases = [(*shape, STACK_K) for shape in STACK_SHAPES]
        stack_cases = [(10, 64, 64, 4)] if args.quick else stack_cases
    from rnnlab.train import measure_threads

    threads = measure_threads(device=device.type)
    where = (
        f"on up to {threads} thread(s) (at most K) beside training" if threads else "in the loop"
    )
    print(
        "ensembles: K networks one after another (alone) or stacked (train_ensemble), 20 steps; "
        f"host measurements {where}"
    )
    stack_cols = ("L", "B", "H", "K", "alone_s", "stacked_s", "alone/K", "stacked/K", "speed-up")
    print(" ".join(f"{c:>9}" for c in stack_cols))
    stacks = []
    for L, B, H, K in stack_cases:
        row = time_stack(L, B, H, device, K=K)
        stacks.append(row)
        print(
            f"{L:9d} {B:9d} {H:9d} {K:9d} {row['alone_s']:9.2f} {row['stacked_s']:9.2f} "
            f"{row['alone_per_member_s']:9.3f} {row['stacked_per_member_s']:9.3f} "
            f"{row['speedup']:8.2f}x"
            + (f" (stacked, no CUDA graphs: {row['stacked_no_graphs_s']:.2f} s)" if cuda else ""),
            flush=True,
        )
    print(
        "dyn/lyapunov_max per probe (16 trajectories, H = 64, float64) against a training step "
        "(B = 64); share: its first and last probe in a default-sweep run (300 steps)"
    )
    lyap_cols = ("L", "K", "lyap_ms", "stack/K_ms", "step_ms", "share_%")
    print(" ".join(f"{c:>10}" for c in lyap_cols))
    lyapunov = []
    for L in LYAPUNOV_LENGTHS[2:3] if args.quick else LYAPUNOV_LENGTHS:
        row = time_lyapunov(L, device)
        lyapunov.append(row)
        print(
            f"{L:10d} {row['K']:10d} {row['lyapunov_ms']:10.2f} {row['stacked_per_member_ms']:10.2f}"
            f" {row['step_ms']:10.2f} {row['share_%']:10.2f}",
            flush=True,
        )
    sweep = None
    if not (args.no_sweep or args.quick):
        print(f"{SWEEP}: wall time by train.ensemble (each a fresh process and store)")
        sweep = bench_sweep(args.quick, args.sweep_rounds)
    return _write(args, device, card, peak, rows, stacks, kernel_rows, sweep, gated, lyapunov)


if __name__ == "__main__":
    raise SystemExit(main())
