"""Steps between probes replayed from a captured graph (``rnnlab.train._Graphs``) are the
same bits as steps run as they come: on the CPU through ``tests/cpu_graphs.py``, which keeps
a CUDA graph's contract (Python runs once, its numbers are frozen, no host reads), and on a
GPU through real CUDA graphs (skipped without one)."""

import warnings

import pytest
import torch

import rnnlab.train as T
from rnnlab.config import RunConfig
from tests.cpu_graphs import Captures
from tests.test_reproducibility import identical


def cfg(seed=0, **sections) -> RunConfig:
    spec = {
        "task": {"name": "adding", "seq_len": 9},
        "model": {"hidden_size": 6, "gain": 1.2},
        "train": {"steps": 40, "batch_size": 5, "eval_size": 5},
        "probe": {"every": 15, "jacobian_trajectories": 2},
        "seed": seed,
    }
    for key, value in sections.items():
        spec[key] = spec.get(key, {}) | value
    return RunConfig.model_validate(spec)


def trained(runs, capture) -> list[list]:
    """Each member's measurements, the steps between probes captured by ``capture`` (None:
    every step as it comes)."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(T, "_graph_capture", lambda device, state_bytes: capture)
        mp.setattr(T, "_CAPTURE_FAILED", [])
        out: list[list] = [[] for _ in runs]
        for k, m in T.train_ensemble(runs):
            out[k].append(m)
    return out


def test_the_stand_in_freezes_python_numbers_and_refuses_host_reads():
    """The control: what would be wrong under a CUDA graph is wrong under the stand-in."""
    t, count = torch.zeros(3), [0]

    def step():
        count[0] += 1
        t.add_(count[0])  # a Python number: frozen at its captured value, 1
        return t * 2  # a new tensor: made once, rewritten by every replay

    capture = Captures()
    replay, out = capture(step)
    assert t.tolist() == [0.0] * 3 and out.isnan().all()  # a capture computes nothing
    replay()
    replay()
    assert count[0] == 1 and t.tolist() == [2.0] * 3 and out.tolist() == [4.0] * 3
    with pytest.raises(RuntimeError, match="host during a capture"):
        capture(lambda: t.sum().item())


CASES = {
    "adam": [cfg()],
    "sgd with momentum, clipping": [
        cfg(train={"optimizer": "sgd", "momentum": 0.9, "lr": 0.1, "clip_norm": 0.05})
    ],
    "rmsprop with momentum, float64": [
        cfg(train={"optimizer": "rmsprop", "momentum": 0.5, "dtype": "float64"})
    ],
    "classification, a fixed training set (two batch shapes)": [
        cfg(
            task={"name": "random_labels", "seq_len": 5, "n_features": 3},
            train={"train_size": 7, "batch_size": 2, "epochs": 10, "steps": 40},
        )
    ],
    "lstm": [cfg(model={"cell": "lstm"})],
    "a stack whose middle member diverges": [
        cfg(0, train={"optimizer": "sgd", "lr": 0.05}, model={"activation": "relu"}),
        cfg(1, train={"optimizer": "sgd", "lr": 50.0}, model={"activation": "relu"}),
        cfg(2, train={"optimizer": "sgd", "lr": 0.02}, model={"activation": "relu"}),
    ],
}


@pytest.mark.parametrize("case", CASES)
def test_steps_replayed_from_a_capture_are_the_same_bits_as_steps_run_as_they_come(case):
    runs = CASES[case]
    capture = Captures()
    replayed = trained(runs, capture)
    as_they_come = trained(runs, None)
    for k in range(len(runs)):
        assert identical(replayed[k], as_they_come[k]), f"member {k}"
    assert capture.replayed >= 20  # most of the 40 steps came from replays
    if "diverges" in case:  # dropping a member captures again, on the smaller stack
        assert replayed[1][-1].diverged and len(replayed[1]) < 41 == len(replayed[0])
        assert capture.captured == 2
    if "two batch shapes" in case:
        assert capture.captured == 2


def test_a_capture_that_fails_warns_once_and_the_run_goes_on_the_same(monkeypatch):
    """And no later run in the process tries again (``_CAPTURE_FAILED``)."""
    runs = [cfg()]

    def broken(fn):
        raise RuntimeError("operation not permitted when stream is capturing")

    failed: list[str] = []
    monkeypatch.setattr(T, "_CAPTURE_FAILED", failed)
    monkeypatch.setattr(T, "_graph_capture", lambda device, state_bytes: None if failed else broken)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        replayed = [[m for _, m in T.train_ensemble(runs)] for _ in range(2)]
    said = [str(w.message) for w in caught if "CUDA graph" in str(w.message)]
    assert len(said) == 1 and "not permitted" in said[0] and "RNNLAB_CUDA_GRAPHS=0" in said[0]
    assert failed == ["RuntimeError: operation not permitted when stream is capturing"]
    as_they_come = trained(runs, None)[0]
    assert identical(replayed[0], as_they_come) and identical(replayed[1], as_they_come)


def test_cuda_graphs_are_on_for_cuda_only_and_can_be_turned_off(monkeypatch):
    monkeypatch.delenv(T.GRAPHS, raising=False)
    monkeypatch.setattr(T, "_CAPTURE_FAILED", [])
    assert T._graph_capture(torch.device("cuda")) is T._cuda_capture
    assert T._graph_capture(torch.device("cpu")) is None
    assert T._graph_capture(torch.device("cuda"), T.GRAPH_BYTES) is T._cuda_capture
    assert T._graph_capture(torch.device("cuda"), T.GRAPH_BYTES + 1) is None  # compute-bound
    monkeypatch.setattr(T, "_CAPTURE_FAILED", ["RuntimeError: …"])  # one failed: no more
    assert T._graph_capture(torch.device("cuda")) is None
    monkeypatch.setattr(T, "_CAPTURE_FAILED", [])
    monkeypatch.setenv(T.GRAPHS, "0")
    assert T._graph_capture(torch.device("cuda")) is None


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("case", CASES)
def test_on_cuda_steps_replayed_from_cuda_graphs_are_the_same_bits(case):
    runs = [
        r.model_copy(update={"train": r.train.model_copy(update={"device": "cuda"})})
        for r in CASES[case]
    ]
    with warnings.catch_warnings():
        warnings.filterwarnings("error", ".*CUDA graph")  # a failed capture fails the test
        replayed = trained(runs, T._cuda_capture)
    as_they_come = trained(runs, None)
    for k in range(len(runs)):
        assert identical(replayed[k], as_they_come[k]), f"member {k}"


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_on_cuda_a_capture_that_fails_leaves_the_process_as_it_was(monkeypatch):
    """A host read inside the capture (here injected) fails it: the run warns and goes on
    with the same bits, the current stream is the one before, and memory can still be freed."""
    runs = [cfg(train={"device": "cuda"})]
    real = T._forward_backward

    def reading(*args):
        values = real(*args)
        if torch.cuda.is_current_stream_capturing():
            values[T.names.TRAIN_LOSS].sum().item()  # not allowed while capturing
        return values

    monkeypatch.setattr(T, "_forward_backward", reading)
    stream = torch.cuda.current_stream()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        replayed = trained(runs, T._cuda_capture)
    assert any("could not capture" in str(w.message) for w in caught)
    assert torch.cuda.current_stream() == stream == torch.cuda.default_stream()
    torch.cuda.empty_cache()
    assert identical(replayed[0], trained(runs, None)[0])


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_on_cuda_adam_multiplies_by_the_reciprocal_as_a_division_by_a_python_number(dtype):
    """ATen's CUDA t / c for a Python number c is t × fl(1/c): the device tensor Adam reads
    holds that reciprocal, so its bits are those of the division by the Python number."""
    from rnnlab.optim import Adam

    g = torch.Generator(device="cuda").manual_seed(0)
    p = torch.nn.Parameter(torch.randn(2, 30, 40, generator=g, device="cuda", dtype=dtype))
    opt = Adam([p])
    for t in range(1, 40):
        opt.advance()
        c1 = 1 - 0.9**t
        m = torch.randn(2, 30, 40, generator=g, device="cuda", dtype=dtype)
        assert torch.equal(m / c1, m * opt.corrections[0])


def test_bench_times_a_replayed_step_on_cuda_only():
    from rnnlab.bench import time_shape

    row = time_shape(3, 2, 4, torch.device("cpu"), repeats=1)
    assert row["c_ms"] > 0 and "g_ms" not in row


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_on_cuda_bench_times_the_step_replayed_from_a_cuda_graph():
    from rnnlab.bench import time_shape

    row = time_shape(20, 4, 8, torch.device("cuda"), repeats=2)
    assert row["g_ms"] > 0 and row["g/a"] == pytest.approx(row["g_ms"] / row["a_ms"])
