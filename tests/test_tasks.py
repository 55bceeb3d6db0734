"""Tasks: shapes, markers, targets, determinism, and each baseline against Monte Carlo."""

import hashlib
import math
import shutil
from typing import Literal

import pytest
import torch
from conftest import ROOT, cli, write

from rnnlab.config import TASK_CONFIGS
from rnnlab.tasks import TASKS, Task, make_task


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


def test_registry_matches_config_names():
    assert set(TASKS) == set(TASK_CONFIGS)
    for name, cls in TASK_CONFIGS.items():  # config defaults build the task they describe
        cfg = cls(seq_len=30)
        task = make_task(**cfg.model_dump())
        assert task.name == name and task.seq_len == 30


@pytest.mark.parametrize("variant", ["uniform", "halves"])
def test_adding_markers_and_targets(variant):
    task = make_task("adding", 50, variant=variant)
    x, y = task.sample(256, gen())
    assert x.shape == (50, 256, 2) and y.shape == (1, 256, 1)
    markers = x[..., 1]
    assert torch.all(markers.sum(0) == 2)  # exactly two distinct marked positions
    assert torch.allclose(y[0, :, 0], (x[..., 0] * markers).sum(0))
    assert torch.all((x[..., 0] >= 0) & (x[..., 0] < 1))
    if variant == "halves":
        assert torch.all(markers[:25].sum(0) == 1) and torch.all(markers[25:].sum(0) == 1)


def test_adding_baseline_monte_carlo():
    task = make_task("adding", 10)
    _, y = task.sample(400_000, gen(1))
    const = torch.ones_like(y)  # the best input-ignoring predictor: E[sum] = 1
    mse = float(task.loss(const, y).mean())
    assert abs(mse - task.baseline) / task.baseline < 0.01
    assert task.baseline == pytest.approx(1 / 6)


def test_copy_layout_and_baseline():
    task = make_task("copy", 7)  # N = 10, K = 8: L = T + 20
    x, y = task.sample(64, gen())
    assert x.shape == (27, 64, 10) and y.shape == (27, 64)
    ids = x.argmax(-1)
    assert torch.all((ids[:10] >= 1) & (ids[:10] <= 8))
    assert torch.all(ids[10:16] == 0) and torch.all(ids[16] == 9) and torch.all(ids[17:] == 0)
    assert torch.equal(y[17:], ids[:10]) and torch.all(y[:17] == 0)
    # The memoryless predictor: blank for sure for T + N steps, then uniform over the K symbols.
    logits = torch.full((27, 64, 9), -1e9)
    logits[:17, :, 0] = 0
    logits[17:, :, 1:] = 0
    loss = task.loss(logits, y)
    assert torch.allclose(loss, torch.full_like(loss, 10 * math.log(8) / 27), rtol=1e-5)
    assert task.baseline == pytest.approx(10 * math.log(8) / 27)


def test_temporal_order_classes_balanced_and_correct():
    task = make_task("temporal_order", 40)
    x, y = task.sample(40_000, gen(2))
    ids = x.argmax(-1)  # (T, B)
    relevant = ids >= 4
    assert torch.all(relevant.sum(0) == 2)
    pos = relevant.int().argsort(dim=0, descending=True, stable=True)[:2].sort(0).values
    assert torch.all((pos[0] >= 4) & (pos[0] <= 8) & (pos[1] >= 20) & (pos[1] <= 24))
    first, second = ids.gather(0, pos) - 4
    assert torch.equal(y[0], 2 * first + second)
    freq = torch.bincount(y[0], minlength=4).double() / y.numel()
    assert torch.allclose(freq, torch.full((4,), 0.25, dtype=torch.float64), atol=0.01)
    # Cross-entropy of the best constant predictor (the class frequencies) ≈ ln 4.
    ce = -(freq * freq.log()).sum()
    assert float(ce) == pytest.approx(task.baseline, rel=1e-3)


@pytest.mark.parametrize("T", [2, 3, 5])
def test_temporal_order_tiny_lengths(T):
    ids = make_task("temporal_order", T).sample(512, gen())[0].argmax(-1)
    assert torch.all((ids >= 4).sum(0) == 2)


def test_permutation_first_symbol_recall():
    task = make_task("permutation", 30, n_symbols=20)
    x, y = task.sample(20_000, gen(3))
    ids = x.argmax(-1)
    assert x.shape == (30, 20_000, 20)
    assert torch.equal(y[0], ids[0]) and torch.all(ids[0] < 2) and torch.all(ids[1:] >= 2)
    p1 = y.double().mean()
    ce = -(p1 * p1.log() + (1 - p1) * (1 - p1).log())
    assert float(ce) == pytest.approx(math.log(2), rel=1e-3) and task.baseline == pytest.approx(
        math.log(2)
    )


def test_white_noise_drive_and_baseline_monte_carlo():
    task = make_task("white_noise", 6, n_inputs=3, input_std=1.7)
    x, y = task.sample(200_000, gen(4))
    assert x.shape == (6, 200_000, 3) and y.shape == (1, 200_000, 1)
    assert torch.equal(y[0, :, 0], x[0, :, 0])  # the first step's first feature
    assert float(x.std()) == pytest.approx(1.7, rel=5e-3) and abs(float(x.mean())) < 5e-3
    corr = torch.corrcoef(x[:, :2000].reshape(6, -1))  # independent over steps
    assert (corr - torch.eye(6)).abs().max() < 0.05
    mse = float(task.loss(torch.zeros_like(y), y).mean())  # the best constant: 0
    assert mse == pytest.approx(task.baseline, rel=0.01) and task.baseline == pytest.approx(1.7**2)


def test_white_noise_needs_a_positive_std():
    with pytest.raises(ValueError, match="input_std"):
        make_task("white_noise", 5, input_std=0.0)


def test_random_labels_layout_loss_and_baseline():
    task = make_task("random_labels", 4, n_features=5)
    x, y = task.sample(100_000, gen(5))
    assert x.shape == (4, 100_000, 5) and y.shape == (1, 100_000, 1) and y.dtype == torch.float32
    assert set(y.unique().tolist()) == {0.0, 1.0}
    assert float(x.std()) == pytest.approx(1.0, rel=5e-3)
    assert float(y.mean()) == pytest.approx(0.5, abs=5e-3)  # fair coin flips
    # The loss is torch's own BCE on sigmoid(logit), per sequence.
    logits = torch.randn(1, 1000, 1, generator=gen(6), dtype=torch.float64) * 3
    target = y[:, :1000].double()
    want = torch.nn.functional.binary_cross_entropy(torch.sigmoid(logits), target, reduction="none")
    assert torch.allclose(task.loss(logits, target), want[0, :, 0], rtol=1e-10)
    acc = task.accuracy(logits, target)
    assert torch.equal(acc, ((logits > 0).double() == target).double()[0, :, 0])
    # Baseline: the best input-ignoring predictor says p = ½ (logit 0): ln 2 exactly.
    at_half = task.loss(torch.zeros_like(y), y)
    assert torch.allclose(at_half, torch.full_like(at_half, math.log(2)))
    p = y.double().mean()  # …and the best constant fitted to the labels is no better
    assert float(-(p * p.log() + (1 - p) * (1 - p).log())) == pytest.approx(task.baseline, rel=1e-4)


@pytest.mark.parametrize("name", sorted(TASKS))
def test_determinism(name):
    task = make_task(name, 20)
    a, b, c = (task.sample(8, gen(s)) for s in (5, 5, 6))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert not torch.equal(a[0], c[0])


# sha256 (first 16 hex digits) of two successive batches (B = 5, then 3) from one CPU generator,
# computed with the implementation before sampling followed the generator's device: the bits,
# dtypes, shapes and the generator's consumption must not change.
CPU_STREAMS = [
    ("adding", 13, {"variant": "uniform"}, 0, "4fd52ab8cfe6e06e"),
    ("adding", 13, {"variant": "uniform"}, 7, "e1daed58dcc7d6f5"),
    ("adding", 13, {"variant": "halves"}, 0, "b25908f07836c570"),
    ("adding", 13, {"variant": "halves"}, 7, "80addb6d5e991ed7"),
    ("copy", 7, {}, 0, "ae7e0bc6d78bd0b0"),
    ("copy", 7, {}, 7, "144a5c63388f0f0f"),
    ("temporal_order", 20, {}, 0, "6763a62232e8f77f"),
    ("temporal_order", 20, {}, 7, "a5d66d1f26acd8e8"),
    ("permutation", 11, {"n_symbols": 9}, 0, "e628dfdb903cb7ce"),
    ("permutation", 11, {"n_symbols": 9}, 7, "5e5435d300166835"),
]


def _digest(tensors) -> str:
    h = hashlib.sha256()
    for t in tensors:
        h.update(str((t.dtype, tuple(t.shape))).encode())
        h.update(t.numpy().tobytes())
    return h.hexdigest()[:16]


@pytest.mark.parametrize(("name", "T", "options", "seed", "digest"), CPU_STREAMS)
def test_cpu_samples_are_bit_identical_to_the_saved_stream(name, T, options, seed, digest):
    task, g = make_task(name, T, **options), gen(seed)
    batches = [*task.sample(5, g), *task.sample(3, g)]
    assert all(t.device.type == "cpu" for t in batches)
    assert _digest(batches) == digest


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("name", sorted(TASKS))
def test_a_cuda_generator_samples_on_the_gpu(name):
    task = make_task(name, 20)
    g = torch.Generator(device="cuda").manual_seed(0)
    x, y = task.sample(64, g)
    cx, cy = task.sample(64, gen(0))
    assert x.is_cuda and y.is_cuda
    assert (x.shape, x.dtype, y.shape, y.dtype) == (cx.shape, cx.dtype, cy.shape, cy.dtype)
    if name in ("copy", "temporal_order", "permutation"):
        assert torch.all(x.sum(-1) == 1)  # one-hot rows
    elif name == "adding":
        assert torch.all(x[..., 1].sum(0) == 2)  # two markers per sequence
    again = task.sample(64, torch.Generator(device="cuda").manual_seed(0))
    assert torch.equal(x, again[0]) and torch.equal(y, again[1])  # reproducible on the GPU


def test_unknown_task():
    with pytest.raises(ValueError, match="expected one of: adding"):
        make_task("addding", 10)


ECHO = '''"""Echo: a task written by tests/test_tasks.py into a copy of the package."""

from typing import ClassVar, Literal

from pydantic import Field

from rnnlab.options import Int
from rnnlab.tasks.base import Task, one_hot


class EchoTask(Task):
    """Echo the first symbol at the last step."""

    name: Literal["echo"] = "echo"
    n_echoes: Int = Field(2, ge=1)
    """How many symbols to echo."""

    classification: ClassVar[bool] = True
    input_size: ClassVar[int] = 4
    output_size: ClassVar[int] = 4
    baseline: ClassVar[float] = 1.0

    def sample(self, batch_size, generator):
        import torch

        ids = torch.randint(0, 4, (self.seq_len, batch_size), generator=generator)
        return one_hot(ids, 4), ids[:1]
'''


def test_a_new_task_is_one_new_file(tmp_path):
    """Dropping echo.py into (a copy of) rnnlab/tasks/ is the whole change: the schema, the
    task names in messages, the did-you-mean and the grid all take it in."""
    shutil.copytree(ROOT / "rnnlab", tmp_path / "rnnlab")  # with its bytecode: fast
    write(tmp_path / "rnnlab" / "tasks" / "echo.py", ECHO)
    env = {"PYTHONPATH": str(tmp_path)}
    exp = write(
        tmp_path / "e.yaml",
        "name: echo\ntask: {name: echo, seq_len: 5}\nsweep: {task.n_echoes: [1, 2, 3]}\n",
    )

    def validate(*overrides):
        return cli("validate", exp, *overrides, cwd=tmp_path, env=env, timeout=60)

    ok = validate()
    assert ok.returncode == 0 and "3 run(s) over task.n_echoes" in ok.stdout, ok.stderr
    names = validate("task.name=ech")
    assert names.returncode == 2
    listed = "adding, copy, temporal_order, permutation, white_noise, random_labels, echo"
    assert f"expected one of: {listed}" in names.stderr
    typos = validate("task.n_echos=2", "task.seq_len=1", "sweep.task.n_echo=[1]").stderr
    assert (
        "task.n_echos: unknown key (did you mean 'n_echoes'?); allowed keys: seq_len, name, n_echoes"
        in typos
    )
    assert "task.seq_len: input should be greater than or equal to 2" in typos
    assert "unknown key 'task.n_echo' (did you mean 'task.n_echoes'?)" in typos
    dry = cli("sweep", exp, "--dry-run", cwd=tmp_path, env=env, timeout=60)
    assert dry.returncode == 0 and dry.stdout.count("echo-T5-") == 3, dry.stderr
    assert "echo" not in TASKS  # the copy was extended, this process untouched


def test_a_task_name_is_declared_once():
    with pytest.raises(TypeError, match="task 'adding' is defined twice"):

        class Adding2(Task):
            name: Literal["adding"] = "adding"

    with pytest.raises(TypeError, match="declare name: Literal"):

        class Loose(Task):
            name: str = "loose"

    assert "loose" not in TASKS and TASKS["adding"].__name__ == "AddingTask"
