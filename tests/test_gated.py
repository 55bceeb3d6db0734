"""The gated cells (``model.cell: lstm | gru``): exact per-step gradients against PyTorch's own
cells in a plain autograd loop, against nn.LSTM/nn.GRU, stacking, initialisation, training and
what is (not) measured, the config's checks and the report's figure."""

import typing

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

from rnnlab import config
from rnnlab.bench import gated_reference
from rnnlab.config import RunConfig
from rnnlab.measure import names, probes
from rnnlab.model import cells
from rnnlab.model.elman import MemberInit
from rnnlab.model.gated import RECURSIONS, Gated
from rnnlab.train import train

F64 = torch.float64


def gated(cell, D=3, H=5, O=None, members=1, gain=1.3, dtype=F64, seed=0) -> Gated:
    ms = [
        MemberInit("orthogonal", gain, torch.Generator().manual_seed(seed + k))
        for k in range(members)
    ]
    return Gated(D, H, O, cell=cell, members=ms, dtype=dtype)


def test_cells_table_matches_config_and_recursions():
    assert typing.get_args(config.schema.CellName) == cells.NAMES
    assert set(cells.NAMES) == {"elman", *RECURSIONS}


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_per_step_gradients_match_pytorchs_cells_in_an_autograd_loop(cell):
    """‖∂L/∂h_t‖, ‖∂L/∂c_t‖, ‖∂L/∂x_t‖ and every weight gradient equal those of
    torch.lstm_cell/gru_cell stepped by autograd with retain_grad (float64, 1e-10), for a loss
    that reaches every h_t directly (random weights on each) and with random biases."""
    T, B, D, H = 30, 4, 3, 6
    g = torch.Generator().manual_seed(1)
    m = gated(cell, D, H, gain=1.2)
    with torch.no_grad():
        for p in (m.bias_ih, m.bias_hh):
            p.copy_(torch.randn(p.shape, generator=g, dtype=F64))
    x = torch.randn(1, T, B, D, generator=g, dtype=F64, requires_grad=True)
    w = torch.randn(T, B, H, generator=g, dtype=F64)
    (m.hidden(x)[0] * w).sum().backward()

    params = [
        p[0].detach().clone().requires_grad_()
        for p in (m.weight_ih, m.weight_hh, m.bias_ih, m.bias_hh)
    ]
    xr = x[0].detach().clone().requires_grad_()
    hs, cs = gated_reference(xr, *params, cell)
    (torch.stack(hs) * w).sum().backward()

    norm = lambda ts: torch.stack([t.grad.norm(dim=-1) for t in ts])  # noqa: E731
    torch.testing.assert_close(m.hidden_grad_norms[0], norm(hs), rtol=0, atol=1e-10)
    torch.testing.assert_close(m.input_grad_norms[0], xr.grad.norm(dim=-1), rtol=0, atol=1e-10)
    torch.testing.assert_close(x.grad[0], xr.grad, rtol=0, atol=1e-10)
    if cell == "lstm":
        torch.testing.assert_close(m.cell_grad_norms[0], norm(cs), rtol=0, atol=1e-10)
    else:
        assert m.cell_grad_norms is None
    for ours, ref in zip((m.weight_ih, m.weight_hh, m.bias_ih, m.bias_hh), params, strict=True):
        torch.testing.assert_close(ours.grad[0], ref.grad, rtol=0, atol=1e-10)


@pytest.mark.parametrize(("cell", "Ref"), [("lstm", nn.LSTM), ("gru", nn.GRU)])
def test_forward_and_weight_gradients_equal_torch_nn(cell, Ref):
    """The same weights in nn.LSTM/nn.GRU (their fused path) give the same h_t and the same
    weight gradients: the equations are PyTorch's."""
    T, B, D, H = 25, 3, 2, 7
    m = gated(cell, D, H, gain=0.9)
    ref = Ref(D, H).double()
    with torch.no_grad():
        for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
            getattr(ref, f"{name}_l0").copy_(getattr(m, name)[0])
    x = torch.randn(T, B, D, dtype=F64, generator=torch.Generator().manual_seed(2))
    h = m.hidden(x[None])[0]
    out, _ = ref(x)
    torch.testing.assert_close(h, out, rtol=0, atol=1e-12)
    h[-1].pow(2).sum().backward()
    out[-1].pow(2).sum().backward()
    for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
        torch.testing.assert_close(
            getattr(m, name).grad[0], getattr(ref, f"{name}_l0").grad, rtol=0, atol=1e-10
        )


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_a_member_has_the_same_bits_alone_and_stacked(cell):
    T, B, D, H = 12, 3, 2, 4
    x = torch.randn(3, T, B, D, generator=torch.Generator().manual_seed(3))
    stacked = gated(cell, D, H, O=1, members=3, dtype=torch.float32)
    stacked(x).pow(2).sum().backward()
    for k in range(3):
        alone = gated(cell, D, H, O=1, seed=k, dtype=torch.float32)
        alone(x[k : k + 1]).pow(2).sum().backward()
        assert torch.equal(alone.hidden_grad_norms[0], stacked.hidden_grad_norms[k])
        for (_, p), (_, q) in zip(
            alone.named_parameters(), stacked.named_parameters(), strict=True
        ):
            assert torch.equal(p.grad[0], q.grad[k])
    stacked.keep([2])
    assert stacked.num_members == 1 and stacked.weight_hh.grad is not None


@pytest.mark.parametrize(("cell", "G"), [("lstm", 4), ("gru", 3)])
def test_init_each_gate_block_is_gain_times_orthogonal_and_the_forget_bias_is_one(cell, G):
    H, gain = 8, 1.7
    m = gated(cell, D=3, H=H, gain=gain)
    w = m.weight_hh[0].detach()
    assert w.shape == (G * H, H)
    for j in range(G):
        block = w[j * H : (j + 1) * H]
        torch.testing.assert_close(block @ block.T, gain**2 * torch.eye(H, dtype=F64))
    blocks = [w[j * H : (j + 1) * H] for j in range(G)]
    assert not torch.equal(blocks[0], blocks[1])  # independent draws
    bias = m.bias_ih[0].detach()
    expected = torch.zeros(G * H, dtype=F64)
    if cell == "lstm":
        expected[H : 2 * H] = 1.0  # i, f, g, o: f starts at 1
    assert torch.equal(bias, expected) and not m.bias_hh.detach().any()


def test_lstm_cell_state_carries_the_gradient_the_hidden_state_path_loses():
    """With the forget gate held open (b_f large, f ≈ 1) and the input gate shut, c_t = c_{t−1}:
    ∂L/∂c_t is carried back unattenuated (≈ ∂L/∂c_T at every t), a constant error carousel
    (Hochreiter & Schmidhuber 1997), while W_hh = 0.1·Q makes the h path vanish."""
    T, B, D, H = 40, 2, 1, 4
    m = gated("lstm", D, H, gain=0.1)
    with torch.no_grad():
        m.bias_ih[0, H : 2 * H] = 50.0  # f = σ(50) = 1 − 2e−22
        m.bias_ih[0, :H] = -50.0  # i ≈ 0
        m.bias_ih[0, 2 * H : 3 * H] = 0.0
    x = torch.randn(1, T, B, D, dtype=F64)
    h = m.hidden(x)
    h[0, -1].sum().backward()
    nc = m.cell_grad_norms[0].mean(-1)
    assert torch.allclose(nc, nc[-1].expand(T), rtol=1e-9)
    assert nc[0] > 0


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_training_a_gated_cell_logs_its_profiles_and_no_elman_only_metric(cell):
    run = RunConfig(
        task={"name": "adding", "seq_len": 12},
        model={"cell": cell, "hidden_size": 8},
        train={"steps": 4, "batch_size": 8, "eval_size": 16, "dtype": "float64"},
        probe={"every": 2},
    )
    ms = list(train(run))
    assert [m.step for m in ms] == [0, 1, 2, 3, 4]
    probed = [m for m in ms if m.profile is not None]
    assert [m.step for m in probed] == [0, 2, 4]
    elman_only = ("weights/", "units/", "theory/", "dyn/", "jac/")
    for m in probed:
        assert not [k for k in m.metrics if k.startswith(elman_only)]
        assert names.TABLE_JACOBIAN not in m.tables
        assert m.profile.shape == (12,) and np.all(m.profile > 0)
        assert (
            m.metrics[names.SLOPE]
            == probes.profile_summary(torch.from_numpy(m.profile))[names.SLOPE]
        )
        for p in names.GATED_PARAMETERS:
            assert m.metrics[names.grad_param(p)] > 0
        if cell == "lstm":
            nc = m.tables[names.TABLE_GRAD_C]
            assert list(nc["k"]) == list(range(11, -1, -1))
            s = probes.cell_summary(torch.from_numpy(nc["n_t"]))
            assert m.metrics[names.GRAD_C_SLOPE] == s[names.GRAD_C_SLOPE]
        else:
            assert names.TABLE_GRAD_C not in m.tables and names.GRAD_C_SLOPE not in m.metrics
    assert ms[-1].metrics[names.TRAIN_LOSS] < ms[0].metrics[names.TRAIN_LOSS] * 10  # finite
    assert all(np.isfinite(m.metrics[names.TRAIN_LOSS]) for m in ms)


def test_a_gated_cell_with_an_activation_is_bad_input_and_elman_keys_stay():
    with pytest.raises(
        ValueError, match=r"model.activation=relu applies to the Elman cell only; .*sub-grid"
    ):
        RunConfig(model={"cell": "lstm", "activation": "relu"})
    assert RunConfig(model={"cell": "elman"}).run_key == RunConfig().run_key
    lstm, gru = RunConfig(model={"cell": "lstm"}), RunConfig(model={"cell": "gru"})
    assert len({lstm.run_key, gru.run_key, RunConfig().run_key}) == 3
    assert lstm.ensemble_key != RunConfig().ensemble_key
    mem = {c: sum(RunConfig(model={"cell": c}).memory().values()) for c in cells.NAMES}
    assert mem["elman"] < mem["gru"] < mem["lstm"]


def test_gated_figure_draws_h_and_c_at_the_longest_length(tmp_path):
    from rnnlab.report import Frames
    from rnnlab.report import plotting as plot
    from rnnlab.report.figures.gated_vs_vanilla import (
        CELL_STATE,
        HIDDEN,
        gated_frame,
        gated_vs_vanilla,
    )

    runs = pd.DataFrame(
        [
            {"run_id": f"{c}{T}{s}", "name": f"{c}{T}{s}", "status": "finished",
             "model.cell": c, "task.seq_len": T, "seed": s}
            for c in cells.NAMES for T in (10, 20) for s in (0, 1)
        ]
    )  # fmt: skip
    decay = {"elman": 0.5, "lstm": 0.9, "gru": 0.8}

    def profile(r, rate):
        T = r["task.seq_len"]
        k = np.arange(T - 1, -1, -1)
        return pd.DataFrame(
            {"run_id": r.run_id, "step": [0] * T + [5] * T, "t": [*range(1, T + 1)] * 2,
             "k": [*k] * 2, "n_t": [*(2.0 * rate**k)] * 2}
        )  # fmt: skip

    h = pd.concat(profile(r, decay[r["model.cell"]]) for _, r in runs.iterrows())
    c = pd.concat(profile(r, 0.99) for _, r in runs.iterrows() if r["model.cell"] == "lstm")
    empty = pd.DataFrame(columns=["run_id", "key", "step", "value"])
    f = Frames("synthetic", runs, empty, h, ["model.cell", "task.seq_len", "seed"])
    f.tables["grad_c"] = c
    data, left_out = plot.drawable_ratios(gated_frame(f))
    assert set(data["task.seq_len"]) == {20} and left_out == {}
    assert len(data) == (3 + 1) * 2 * 2 * 20  # (3 cells' h + LSTM's c) × seeds × phases × k
    at = data[(data.k == 10) & (data.phase == "init")]
    for cell, rate in decay.items():
        got = at[(at["model.cell"] == cell) & (at.gradient == HIDDEN)].ratio
        assert np.allclose(got, rate**10)
    assert np.allclose(at[at.gradient == CELL_STATE].ratio, 0.99**10)
    files = gated_vs_vanilla(f, tmp_path)
    assert files and files[0].name == "16_gated_vs_vanilla.png" and files[0].stat().st_size > 10_000
    only_elman = Frames("e", runs[runs["model.cell"] == "elman"], empty, h, ["task.seq_len"])
    assert gated_vs_vanilla(only_elman, tmp_path) is None


@pytest.mark.parametrize("cell", ["elman-cpp", "elman-python", "lstm", "gru"])
def test_float32_norms_of_tiny_gradients_do_not_underflow(cell, monkeypatch):
    """A float32 norm squares its entries: ‖(1e−23, …)‖ is 0 in float32. Every cell (the Elman
    cell on each CPU backend) sums its norms' squares in float64, so a gradient scaled by
    1e−25 keeps its profile, scaled."""
    from rnnlab.model.elman import Elman

    cell, _, backend = cell.partition("-")
    if backend:
        monkeypatch.setenv("RNNLAB_BACKEND", backend)
    x = torch.randn(1, 15, 3, 2, generator=torch.Generator().manual_seed(4))
    norms = {}
    for scale in (1.0, 1e-25):
        if cell == "elman":
            m = Elman(
                2, 16, members=[MemberInit("orthogonal", 1.0, torch.Generator().manual_seed(0))]
            )
        else:
            m = gated(cell, D=2, H=16, dtype=torch.float32)
        (m.hidden(x)[0, -1].sum() * scale).backward()
        norms[scale] = m.hidden_grad_norms[0]
    assert torch.linalg.vector_norm(torch.full((16,), 1e-23)) == 0  # what float32 would give
    assert (norms[1e-25] > 0).all() and norms[1e-25].dtype == F64
    torch.testing.assert_close(norms[1e-25], norms[1.0] * 1e-25, rtol=1e-5, atol=0)


def test_elman_only_figures_draw_the_elman_runs_and_say_so(tmp_path):
    from rnnlab.report import Frames, figures

    runs = pd.DataFrame(
        [
            {"run_id": f"{c}{T}{s}", "name": f"{c}{T}{s}", "status": "finished",
             "model.cell": c, "task.seq_len": T, "seed": s, "model.activation": "tanh"}
            for c in ("elman", "lstm") for T in (10, 20) for s in (0, 1)
        ]
    )  # fmt: skip
    history = pd.DataFrame(
        [
            (r["run_id"], key, step, 1.1 + 0.01 * step)
            for r in runs.to_dict("records")
            if r["model.cell"] == "elman"  # only the Elman runs measure W_hh
            for key in (names.W_HH_RADIUS, names.W_HH_SIGMA_MAX)
            for step in (0, 5)
        ],
        columns=["run_id", "key", "step", "value"],
    )
    profiles = pd.DataFrame(columns=["run_id", "step", "t", "k", "n_t"])
    f = Frames("synthetic", runs, history, profiles, ["model.cell", "task.seq_len", "seed"])
    only = f.of_cell("elman")
    assert set(only.runs["model.cell"]) == {"elman"} and len(only.runs) == 4
    assert only.swept == ["task.seq_len", "seed"] and only.hue == "task.seq_len"
    assert f.hue == "model.cell"
    spectrum = next(fig for fig in figures.registered() if fig.number == 5)
    assert spectrum.elman_only
    paths, caption = spectrum.render(f, tmp_path)
    assert paths[0].name == "5_spectrum_over_training.png"
    assert caption.endswith("Elman runs only: gated cells do not measure it.")
    elman = Frames("e", runs[runs["model.cell"] == "elman"], history, profiles, ["task.seq_len"])
    assert elman.of_cell("elman") is elman
    assert spectrum.render(elman, tmp_path)[1] == spectrum.caption
    profile_fig = next(fig for fig in figures.registered() if fig.number == 1)
    assert not profile_fig.elman_only
    lstm = Frames("l", runs[runs["model.cell"] == "lstm"], history[:0], profiles, ["seed"])
    assert spectrum.render(lstm, tmp_path) == (None, spectrum.caption)  # left out


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_cuda_matches_cpu_and_stacks_keep_their_bits(cell):
    x = torch.randn(3, 40, 4, 2, dtype=F64, generator=torch.Generator().manual_seed(5))
    cpu = gated(cell, D=2, H=8, O=1, members=3)
    cpu(x).pow(2).sum().backward()
    gpu = gated(cell, D=2, H=8, O=1, members=3).cuda()
    gpu(x.cuda()).pow(2).sum().backward()
    torch.testing.assert_close(
        gpu.hidden_grad_norms.cpu(), cpu.hidden_grad_norms, atol=1e-10, rtol=0
    )
    torch.testing.assert_close(gpu.weight_hh.grad.cpu(), cpu.weight_hh.grad, atol=1e-10, rtol=0)
    alone = gated(cell, D=2, H=8, O=1, seed=2, dtype=torch.float32).cuda()
    stacked = gated(cell, D=2, H=8, O=1, members=3, dtype=torch.float32).cuda()
    xf = x.float().cuda()
    alone(xf[2:]).pow(2).sum().backward()
    stacked(xf).pow(2).sum().backward()
    assert torch.equal(alone.hidden_grad_norms[0], stacked.hidden_grad_norms[2])
    assert torch.equal(alone.weight_hh.grad[0], stacked.weight_hh.grad[2])


def test_logged_by_names_the_cells_that_log_each_metric():
    """``cells.logged_by`` (what expect: checks are validated against) agrees with what each
    cell's training logs, and a check on a metric no cell of the grid logs is bad input."""

    for cell in cells.NAMES:
        run = RunConfig(
            task={"name": "adding", "seq_len": 6},
            model={"cell": cell, "hidden_size": 4},
            train={"steps": 1, "batch_size": 4, "eval_size": 4},
        )
        logged = {k for m in train(run) for k in m.metrics}
        assert all(cell in cells.logged_by(k) for k in logged), cell
        if cell != "elman":
            assert not [k for k in logged if k.split("/")[0] in names.ELMAN_ONLY_GROUPS]
    assert (
        cells.logged_by(names.GRAD_C_SLOPE) == ("lstm",)
        and cells.logged_by(names.grad_param("bias")) == ("elman",)
        and cells.logged_by(names.SLOPE) == cells.NAMES
    )


def test_an_expect_check_on_a_metric_the_grids_cells_never_log_is_bad_input(tmp_path):
    from rnnlab.config import ConfigError, load_experiment

    path = tmp_path / "x.yaml"
    checks = [
        '{check: a, value: "{weights/W_hh_radius}", reduce: max, expect: "< 2"}',
        '{check: b, value: "{grad_c/slope}", reduce: max, expect: "< 2"}',
        '{check: c, value: "{grad_h/slope}", reduce: max, expect: "< 2"}',
    ]
    text = "name: x\ntask: {seq_len: 5}\nmodel: {cell: gru}\nexpect:\n" + "".join(
        f"  - {c}\n" for c in checks
    )
    path.write_text(text)
    with pytest.raises(ConfigError) as e:
        load_experiment(path)
    assert [p.split(": ", 2)[-1] for p in e.value.problems] == [
        "{weights/W_hh_radius}: logged only for model.cell elman; this grid has gru",
        "{grad_c/slope}: logged only for model.cell lstm; this grid has gru",
    ]
    lstm = text.replace("cell: gru", "cell: lstm").replace(checks[0], checks[2].replace("c,", "d,"))
    path.write_text(lstm)
    load_experiment(path)  # grad_c/slope: the LSTM logs it


def test_report_hue_keeps_elman_activations_apart_from_the_cells():
    from rnnlab.report import plotting as plot
    from rnnlab.report.load import _units

    runs = pd.DataFrame(
        {"model.cell": ["elman", "elman", "lstm", "gru"],
         "model.activation": ["relu", "tanh", "tanh", "tanh"], "seed": [0, 0, 0, 0]}
    )  # fmt: skip
    out, swept = _units(runs, ["model.cell", "model.activation"])
    assert swept == ["unit"] and list(out.unit) == ["relu", "tanh", "lstm", "gru"]
    assert plot.order("unit", out.unit) == ["relu", "tanh", "lstm", "gru"]
    assert set(plot.palette("unit", out)) == {"relu", "tanh", "lstm", "gru"}
    same, kept = _units(runs.assign(**{"model.activation": "tanh"}), ["model.cell"])
    assert kept == ["model.cell"] and "unit" not in same.columns
    assert plot.order("model.cell", ["gru", float("nan"), "elman", None, "lstm"]) == [
        "elman",
        "lstm",
        "gru",
    ]
