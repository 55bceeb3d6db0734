"""Experiment files: every class of bad input is rejected before any work, with exit 2."""

import hashlib
import subprocess
import sys

import pytest
from conftest import ROOT, cli, write

from rnnlab.config import ConfigError, RunConfig, leaf_keys, load_experiment, run_name

GOOD = "name: t\ntask: {name: adding, seq_len: 20}\ntrain: {steps: 3}\n"

BAD = {
    "yaml syntax": ("name: t\nmodel: {activation: [tanh\n", ["YAML syntax error", ":3:"]),
    "unknown key": (
        "name: t\ntrain:\n  stepz: 5\n",
        [":3:", "train.stepz", "did you mean 'steps'"],
    ),
    "wrong type": ("name: t\ntrain: {steps: many}\n", [":2:", "train.steps", "valid integer"]),
    "unknown activation": (
        "name: t\nmodel: {activation: tanhh}\n",
        ["model.activation", "tanh, relu, sigmoid, linear, leaky_relu, hardtanh"],
    ),
    "unknown init": (
        "name: t\nmodel: {init: xavier}\n",
        ["model.init", "default, gaussian, orthogonal"],
    ),
    "unknown optimizer": (
        "name: t\ntrain: {optimizer: lbfgs}\n",
        ["train.optimizer", "sgd, adam, rmsprop"],
    ),
    "unknown task": (
        "name: t\ntask: {name: adder}\n",
        ["task.name", "adding, copy, temporal_order, permutation"],
    ),
    "seq_len < 2": (
        "name: t\ntask: {seq_len: 1}\n",
        ["task.seq_len", "greater than or equal to 2"],
    ),
    "lr <= 0": ("name: t\ntrain: {lr: 0}\n", ["train.lr", "greater than 0"]),
    "ensemble 0": (
        "name: t\ntrain: {ensemble: 0}\n",
        [":2:", "train.ensemble", "expected auto, off or a group size ≥ 1 (got 0)"],
    ),
    "option of another task": (
        "name: t\ntask: {name: copy, variant: halves}\n",
        ["task.variant", "unknown key"],
    ),
    "sweep over missing key": (
        "name: t\nsweep:\n  model.hiden_size: [8]\n",
        [":3:", "model.hiden_size", "did you mean 'model.hidden_size'"],
    ),
    "empty sweep list": ("name: t\nsweep:\n  seed: []\n", [":3:", "sweep.seed", "empty list"]),
    "bad sweep value": ("name: t\nsweep:\n  task.seq_len: [10, 1]\n", [":3:", "task.seq_len=1"]),
    "not a mapping": ("- a\n- b\n", ["must be a mapping"]),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_input_exit_2_names_the_key_and_writes_nothing(tmp_path, case):
    text, expected = BAD[case]
    path = write(tmp_path / "bad.yaml", text)
    for command in ("validate", "sweep"):
        proc = cli(command, path, cwd=tmp_path)
        assert proc.returncode == 2, proc.stderr
        assert "Traceback" not in proc.stderr and "bad.yaml" in proc.stderr
        for fragment in expected:
            assert fragment in proc.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.yaml"]  # no store, no results/


def test_bad_override_and_missing_file(tmp_path):
    path = write(tmp_path / "ok.yaml", GOOD)
    proc = cli("sweep", path, "train.lr=-1", "model.gain=0", cwd=tmp_path)
    assert proc.returncode == 2
    assert "override 'train.lr=-1'" in proc.stderr and "model.gain" in proc.stderr
    assert cli("validate", path, "novalue", cwd=tmp_path).returncode == 2
    proc = cli("validate", tmp_path / "missing.yaml", cwd=tmp_path)
    assert proc.returncode == 2 and "cannot read" in proc.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ok.yaml"]


def test_defaults_fill_everything_and_overrides_are_yaml_typed(tmp_path):
    path = write(tmp_path / "e.yaml", "name: t\n")
    exp, grid = load_experiment(
        path, ["train.clip_norm=1.5", "model.hidden_size=32", "train.lr=1e-2"]
    )
    assert len(grid) == 1 and grid[0] == exp.base()
    run = grid[0]
    assert run.train.clip_norm == 1.5 and run.model.hidden_size == 32 and run.train.lr == 0.01
    assert (
        run.task.name == "adding"
        and run.task.variant == "uniform"
        and run.model.activation == "tanh"
    )
    assert set(run.params()) <= set(leaf_keys())


def test_grid_is_cartesian_product_and_override_pins_an_axis(tmp_path):
    path = write(
        tmp_path / "e.yaml",
        GOOD + "sweep:\n  task.seq_len: [10, 20, 30]\n"
        "  model.activation: [tanh, relu]\n  seed: [0, 1]\n",
    )
    exp, grid = load_experiment(path)
    assert len(grid) == 12
    assert {(r.task.seq_len, r.model.activation, r.seed) for r in grid} == {
        (T, a, s) for T in (10, 20, 30) for a in ("tanh", "relu") for s in (0, 1)
    }
    assert exp.swept_keys() == ["task.seq_len", "model.activation", "seed"]
    _, pinned = load_experiment(path, ["task.seq_len=40", "sweep.seed=[5]"])
    assert {(r.task.seq_len, r.seed) for r in pinned} == {(40, 5)} and len(pinned) == 2


def test_sweep_list_is_union_of_grids(tmp_path):
    path = write(
        tmp_path / "e.yaml",
        GOOD + "sweep:\n"
        "  - {model.activation: [relu], model.init: [identity], seed: [0, 1]}\n"
        "  - {model.activation: [tanh], model.init: [orthogonal], seed: [0, 1]}\n"
        "  - {model.activation: [tanh], model.init: [orthogonal], seed: [1]}\n",
    )
    exp, grid = load_experiment(path)
    assert len(grid) == 4  # the duplicate (tanh, orthogonal, 1) counted once
    assert {(r.model.activation, r.model.init) for r in grid} == {
        ("relu", "identity"),
        ("tanh", "orthogonal"),
    }
    assert "model.activation" in exp.swept_keys()


def test_run_key_is_stable_and_sensitive():
    a = RunConfig.model_validate({"task": {"seq_len": 50}, "seed": 1})
    b = RunConfig.model_validate(
        {"seed": 1, "task": {"name": "adding", "seq_len": 50, "variant": "uniform"}}
    )
    assert a.run_key == b.run_key and len(a.run_key) == 16
    assert a.run_key != RunConfig.model_validate({"task": {"seq_len": 50}, "seed": 2}).run_key
    assert run_name(a) == "adding-T50-tanh-orthogonal1-s1"
    assert run_name(a, ["train.lr"]) == "adding-T50-tanh-orthogonal1-s1-lr0.001"


# run_keys as computed before config/ was split into schema.py and experiment.py and tasks/
# into one file per task (commit 7102e3c), recomputed at the raise to NUMERICS 3 (norms in
# float64): a regression guard, since a run_key is how a store recognises a finished run.
# Only a deliberate change of what a config computes (a raise of NUMERICS) may change them.
RUN_KEYS = [  # (task section, run_key); every other section at its default
    ({}, "23985f8ad95a40a3"),
    ({"name": "adding", "variant": "halves", "seq_len": 37}, "2196d6e6058cbbcb"),
    ({"name": "copy", "seq_len": 7, "n_symbols": 3, "n_categories": 5}, "12753f04cbf7fa6e"),
    ({"name": "temporal_order"}, "58bab38b14401c50"),
    ({"name": "permutation", "n_symbols": 9, "seq_len": 11}, "65c0a47e2a879c20"),
]
# (points, first three run_keys, sha256 of all run_keys joined by spaces, in grid order)
GRID_KEYS = {
    "vanishing": (
        60,
        ["bd5741220c5e0840", "45755078ebd66699", "08d61eff2a34dfe7"],
        "ed12fbbdd0040489",
    ),
    "criticality": (
        34,
        ["15b0d17ee2cbd2fb", "3945c8b201bab4dc", "8f0724c375f1bf94"],
        "29688e8bbdf3028d",
    ),
    "gated": (  # its Elman points are vanishing's tanh ones: model.cell=elman leaves the key
        45,
        ["bd5741220c5e0840", "45755078ebd66699", "08d61eff2a34dfe7"],
        "27326172653f5e5c",
    ),
}


@pytest.mark.parametrize(("task", "key"), RUN_KEYS)
def test_run_key_is_bit_identical_to_the_saved_one(task, key):
    assert RunConfig.model_validate({"task": task}).run_key == key


@pytest.mark.parametrize("name", sorted(GRID_KEYS))
def test_experiment_grid_run_keys_are_bit_identical_to_the_saved_ones(name):
    n, first, digest = GRID_KEYS[name]
    keys = [r.run_key for r in load_experiment(ROOT / "experiments" / f"{name}.yaml")[1]]
    assert (len(keys), keys[:3]) == (n, first)
    assert hashlib.sha256(" ".join(keys).encode()).hexdigest()[:16] == digest


def test_config_and_validate_import_no_torch():
    """`rnnlab validate` and `--help` stay instant: the schema (every task's options
    included) loads without torch."""
    code = (
        "import sys, rnnlab.config, rnnlab.tasks\n"
        "from rnnlab.cli import main\n"
        "assert main(['validate', 'experiments/vanishing.yaml']) == 0\n"
        "assert 'torch' not in sys.modules, 'torch was imported'\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 0, proc.stderr


def test_config_error_lists_every_problem(tmp_path):
    path = write(tmp_path / "e.yaml", "name: t\ntrain: {lr: 0, steps: -1}\nmodel: {gain: 0}\n")
    with pytest.raises(ConfigError) as err:
        load_experiment(path)
    assert len(err.value.problems) == 3


def test_dry_run_lists_grid_and_writes_nothing(tmp_path):
    path = write(tmp_path / "e.yaml", GOOD + "sweep:\n  seed: [0, 1, 2]\n")
    proc = cli("sweep", path, "--dry-run", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "3 run(s)" in proc.stdout and "adding-T20-tanh-orthogonal1-s2" in proc.stdout
    assert sorted(p.name for p in tmp_path.iterdir()) == ["e.yaml"]


def test_train_ensemble_values_and_what_it_leaves_out_of_run_key(tmp_path):
    def load(setting: str) -> RunConfig:
        text = GOOD.replace("train: {steps: 3}", f"train: {{steps: 3, ensemble: {setting}}}")
        return load_experiment(write(tmp_path / "e.yaml", text))[1][0]

    # YAML reads a bare off/on as booleans
    assert [load(v).train.ensemble for v in ("off", "on", "auto", "4")] == [
        "off",
        "auto",
        "auto",
        4,
    ]
    assert len({load(v).run_key for v in ("off", "auto", "4")}) == 1  # scheduling, not science
    assert load("4").run_key == load_experiment(write(tmp_path / "g.yaml", GOOD))[1][0].run_key
    base = load("auto")
    members = [
        base.model_copy(update={"seed": 3}),
        base.model_copy(
            update={"model": base.model.model_copy(update={"gain": 2.0, "init": "identity"})}
        ),
        base.model_copy(
            update={"train": base.train.model_copy(update={"lr": 0.1, "clip_norm": 1.0})}
        ),
    ]
    assert {r.ensemble_key for r in members} == {base.ensemble_key}
    other = base.model_copy(update={"model": base.model.model_copy(update={"hidden_size": 8})})
    assert other.ensemble_key != base.ensemble_key


def test_options_added_later_leave_run_key_alone_at_their_default():
    """model.input_init, train.train_size and train.epochs came after NUMERICS 2: at their
    defaults, given or not, the key is the saved one (RUN_KEYS[0]); set, they enter it."""
    explicit = {"model": {"input_init": "default"}, "train": {"train_size": None, "epochs": None}}
    assert RunConfig.model_validate(explicit).run_key == RUN_KEYS[0][1]
    keys = {
        RunConfig.model_validate({"model": {"input_init": "glorot_uniform"}}).run_key,
        RunConfig.model_validate({"train": {"train_size": 100}}).run_key,
        RunConfig.model_validate({"train": {"train_size": 100, "epochs": 2}}).run_key,
    }
    assert len(keys) == 3 and RUN_KEYS[0][1] not in keys


def test_epochs_set_the_steps_over_a_fixed_training_set():
    run = RunConfig.model_validate({"train": {"train_size": 100, "batch_size": 8, "epochs": 5}})
    assert run.train.steps == 5 * 13  # 12 full batches and one of 4 per epoch
    same = {"train_size": 100, "batch_size": 8, "epochs": 5, "steps": 65}
    assert RunConfig.model_validate({"train": same}).run_key == run.run_key
    with pytest.raises(ValueError, match=r"train\.steps=64 contradicts train\.epochs=5"):
        RunConfig.model_validate({"train": same | {"steps": 64}})
    with pytest.raises(ValueError, match=r"train\.epochs needs train\.train_size"):
        RunConfig.model_validate({"train": {"epochs": 5}})
    with pytest.raises(ValueError, match="input_init"):
        RunConfig.model_validate({"model": {"input_init": "xavier"}})


def test_a_sweep_over_epochs_gives_each_point_its_steps(tmp_path):
    exp = write(
        tmp_path / "e.yaml",
        "name: e\ntask: {name: random_labels, seq_len: 4}\n"
        "train: {train_size: 10, batch_size: 4}\nsweep: {train.epochs: [1, 3]}\n",
    )
    experiment, grid = load_experiment(exp)
    assert [(r.train.epochs, r.train.steps) for r in grid] == [(1, 3), (3, 9)]
    # the resolved experiment, written back as a sweep stores it, gives the same grid
    import yaml

    again = write(tmp_path / "again.yaml", yaml.safe_dump(experiment.model_dump(mode="json")))
    assert [r.run_key for r in load_experiment(again)[1]] == [r.run_key for r in grid]


REPRODUCTIONS = sorted((ROOT / "experiments" / "reproductions").glob("*.yaml"))


@pytest.mark.parametrize("path", REPRODUCTIONS, ids=lambda p: p.name)
def test_every_reproduction_file_validates(path):
    """Each file has its header (command, runtime), its claim and checks, and validates."""
    import yaml

    text = path.read_text()
    assert f"# Command:  rnnlab reproduce {path.stem}\n" in text and "# Runtime:" in text
    raw = yaml.safe_load(text)
    assert {"reproduces", "expect"} <= set(raw) and raw["name"] == path.stem
    experiment, grid = load_experiment(path)
    assert experiment.expect and grid


def test_jacobian_trajectories_keep_the_key_at_their_default_and_change_it_otherwise():
    base = RunConfig.model_validate({"seed": 3})
    same = RunConfig.model_validate({"seed": 3, "probe": {"jacobian_trajectories": 16}})
    fewer = RunConfig.model_validate({"seed": 3, "probe": {"jacobian_trajectories": 4}})
    assert base.run_key == same.run_key == "f7e9b6e27a76d88f" != fewer.run_key  # as before it


def test_jacobian_cost_estimate_scales_and_the_cli_notes_a_long_one(tmp_path):
    def cfg(H, L, n=16, cell="elman"):
        return RunConfig.model_validate(
            {
                "task": {"seq_len": L},
                "model": {"hidden_size": H, "cell": cell},
                "probe": {"jacobian_trajectories": n},
            }
        )

    assert cfg(64, 100).jacobian_inputs() == 16
    assert cfg(64, 100, n=100).jacobian_inputs() == 64  # the held-out set's first chunk: B
    small = cfg(64, 100).jacobian_seconds()
    assert 0 < small < 1
    assert cfg(128, 100).jacobian_seconds() == pytest.approx(8 * small)  # H³
    assert cfg(64, 100, n=4).jacobian_seconds() == pytest.approx(small / 4)
    assert cfg(64, 100, n=0).jacobian_seconds() == cfg(64, 100, cell="lstm").jacobian_seconds() == 0
    path = write(
        tmp_path / "big.yaml", "name: big\ntask: {seq_len: 1000}\nmodel: {hidden_size: 1024}\n"
    )
    noted = cli("validate", path)
    assert noted.returncode == 0
    seconds = 16 * 1024**3 * (5.4e-11 * 1000 + 3e-9)  # about 979 s a probe, two probes
    assert f"takes about {2 * seconds / 60:.0f} min of a CPU core per run" in noted.stderr
    assert "hidden_size=1024, task.seq_len=1000 along 16 trajectories" in noted.stderr
    assert "probe.jacobian_trajectories=0 skips it" in noted.stderr
    hours = cli("validate", path, "model.hidden_size=2048")
    assert "takes about 4.4 h of a CPU core" in hours.stderr
    quiet = cli("validate", path, "probe.jacobian_trajectories=0")
    assert quiet.returncode == 0 and quiet.stderr == ""


def test_numbers_are_read_as_pyyaml_reads_them_but_010_and_base_60():
    """PyYAML's YAML 1.1 reads 010 as 8 (octal) and 1:30 as 90 (base 60), silently; here 010
    is 10 and base-60 forms stay text (the schema refuses them), as in YAML 1.2; every other
    form keeps its value (hex, binary, signs, underscores, floats). An explicit !!int that is
    not an integer is a one-line error, not an exception."""
    from rnnlab.config.safeyaml import YAMLProblem, parse

    texts = ("010", "1:30", "1:30.5", "0b101", "-0x1F", "0x_1F", "0o17", "1_000", "-7", "2.5e-3")
    read = {text: parse(f"a: {text}")[0]["a"] for text in texts}
    assert read == {
        "010": 10,
        "1:30": "1:30",
        "1:30.5": "1:30.5",
        "0b101": 5,
        "-0x1F": -31,
        "0x_1F": 31,
        "0o17": 15,
        "1_000": 1000,
        "-7": -7,
        "2.5e-3": 0.0025,
    }
    assert type(read["010"]) is int
    for bad in ("0x", "0xZZ", "²", "+-5", "0b2"):
        with pytest.raises(YAMLProblem, match="is not an integer"):
            parse(f"a: !!int {bad}")
