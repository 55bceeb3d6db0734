"""Hostile input is normal input: one line naming the problem, exit 2, nothing written.

Each case runs the real CLI (``python -m rnnlab``) in a fresh folder with a store path that
must stay untouched, and checks the exit status, the message, the absence of a traceback,
that the answer came in seconds (bounded work) and that nothing was written. The cases are
the ones a hostile user found (issue 13), plus their neighbours.
"""

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import ROOT

BASE = """\
name: hostile
task: {name: adding, seq_len: 6}
model: {hidden_size: 4}
train: {steps: 2, batch_size: 2, eval_size: 2}
"""

LAUGHS = "\n".join(
    [
        'a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]',
        *[
            f"{n}: &{n} [{','.join([f'*{p}'] * 9)}]"
            for p, n in zip("abcdefgh", "bcdefghi", strict=False)
        ],
    ]
)

SEVEN_AXES = (
    "seed",
    "train.steps",
    "train.batch_size",
    "model.hidden_size",
    "probe.every",
    "train.eval_size",
    "task.seq_len",
)
TEN_MILLION = BASE + "sweep:\n" + "".join(f"  {k}: {list(range(2, 12))}\n" for k in SEVEN_AXES)
"""Seven axes of ten values: 10⁷ points, refused before any expansion."""

# (id, file text or bytes or a special, command arguments after the file, expected message)
CASES = [
    # --- the file itself
    ("latin-1", BASE.encode() + b"description: caf\xe9\n", [], "not UTF-8 text"),
    ("utf-16", BASE.encode("utf-16"), [], "UTF-16"),
    ("billion-laughs", LAUGHS, [], "more than 150,000 values once its aliases are expanded"),
    (
        "values-150k",
        BASE + f"sweep:\n  seed: [{'0,' * 150_000}0]\n",
        [],
        "more than 150,000 values",
    ),
    ("number-base-60", BASE, ["seed=1:30"], "unable to parse string as an integer"),
    ("recursive-alias", "a: &a [1, *a]\n", [], "refers to itself"),
    ("deep-brackets", "a: " + "[" * 100_000 + "]" * 100_000 + "\n", [], "nesting deeper"),
    ("deep-mappings", "a:\n" + "".join(f"{' ' * i} k:\n" for i in range(1, 60)), [], "nesting"),
    ("date-key", BASE + "2024-01-01: 3\n", [], "2024-01-01: unknown key"),
    ("int-key", BASE + "1: 3\n", [], "key 1 is not a string"),
    ("huge-seed", BASE + "seed: " + "9" * 5000 + "\n", [], "integer of 5000 digits"),
    ("duplicate-key", BASE + "train: {steps: 5}\n", [], "duplicate key 'train'"),
    ("fifo", "FIFO", [], "not a regular file (a FIFO)"),
    ("dev-zero", "/dev/zero", [], "not a regular file (a character device)"),
    ("directory", "DIR", [], "not a regular file (a directory)"),
    ("missing", "MISSING", [], "cannot read experiment file"),
    ("too-large", BASE + "#" * (1 << 20) + "\n", [], "too large for an experiment file"),
    ("syntax", BASE + "train: {steps: [1, 2\n", [], "YAML syntax error"),
    ("top-level-list", "- 1\n- 2\n", [], "must be a mapping"),
    ("nul-byte", BASE + 'description: "a\\0b"\n', [], None),  # NUL inside a string is fine
    ("control-char", BASE + 'description: "a\\x07b"\n', [], None),  # escaped: fine
    ("raw-control-char", BASE.encode() + b"description: a\x07b\n", [], "unacceptable character"),
    ("merge-key", BASE + "task2: &t {seq_len: 9}\nresources: {<<: *t}\n", [], "merge keys"),
    ("empty-file", "", [], "the file has no settings"),
    ("comments-only", "# nothing\n", [], "the file has no settings"),
    # --- names and text
    (
        "name-escape",
        BASE.replace("hostile", "'../../../../tmp/escape'"),
        [],
        "valid experiment name",
    ),
    ("name-slash", BASE.replace("hostile", "a/b"), [], "valid experiment name"),
    ("name-long", BASE.replace("hostile", "x" * 501), [], "valid experiment name"),
    ("name-nul", BASE.replace("hostile", '"a\\0b"'), [], "valid experiment name"),
    ("name-empty", BASE.replace("hostile", "''"), [], "valid experiment name"),
    ("description-long", BASE + "description: " + "x" * 20_001 + "\n", [], "10000 characters"),
    # --- numbers
    ("steps-true", BASE, ["train.steps=true"], "expected a number, got a boolean"),
    ("steps-yes", BASE.replace("steps: 2", "steps: yes"), [], "expected a number, got a boolean"),
    ("gain-inf", BASE, ["model.gain=.inf"], "finite number"),
    ("lr-nan", BASE, ["train.lr=.nan"], "finite number"),
    ("seed-negative", BASE, ["seed=-1"], "greater than or equal to 0"),
    ("seed-2-64", BASE, [f"seed={2**64}"], "less than or equal to"),
    ("eval-size-1e9", BASE, ["train.eval_size=1000000000"], "needs about"),
    ("seq-len-1e9", BASE, ["task.seq_len=1000000000"], "needs about"),
    ("hidden-1e6", BASE, ["model.hidden_size=1000000"], "needs about"),
    ("train-size-1e9", BASE, ["train.train_size=1000000000"], "needs about"),
    ("gain-1e39", BASE, ["model.gain=1e39"], "less than or equal to 1000000"),
    ("input-std-1e200", BASE, ["task.name=white_noise", "task.input_std=1e200"], "less than or"),
    ("input-std-1e-170", BASE, ["task.name=white_noise", "task.input_std=1e-170"], "greater than"),
    ("steps-float", BASE, ["train.steps=2.5"], "train.steps"),
    # --- sweeps
    ("sweep-empty-list", BASE + "sweep: []\n", [], "an empty list"),
    ("sweep-scalar", BASE + "sweep: {task.seq_len: 10}\n", [], "expected a list of values"),
    ("sweep-empty-axis", BASE + "sweep: {seed: []}\n", [], "empty list"),
    ("sweep-unknown-key", BASE + "sweep: {model.gian: [1, 2]}\n", [], "did you mean"),
    ("sweep-10-million", TEN_MILLION, [], "10,000,000 grid points, more than 10,000; pass --yes"),
    ("sweep-10-million-yes", TEN_MILLION, ["--yes"], "more than 100,000"),
    # --- keys and names
    ("unknown-key", BASE + "trian: {}\n", [], "did you mean 'train'"),
    ("unknown-activation", BASE, ["model.activation=tahn"], "'tahn' is not allowed"),
    ("unknown-task", BASE, ["task.name=adding2"], "unknown task"),
    ("device-cuda", BASE, ["train.device=cuda"], "no CUDA device"),
    # --- overrides
    ("override-no-equals", BASE, ["train.steps"], "expected dotted.key=value"),
    ("override-bad-yaml", BASE, ["train.steps=[1, 2"], "override 'train.steps=[1, 2'"),
    ("override-bad-type", BASE, ["train.steps=abc"], "override 'train.steps=abc'"),
    ("override-empty-key", BASE, ["=3"], "expected dotted.key=value"),
    ("override-new-section", BASE, ["bogus.x=1"], "override 'bogus.x=1': bogus: unknown key"),
    ("override-below-scalar", BASE, ["seed.x=1"], "override 'seed.x=1'"),
    ("override-scalar-axis", BASE, ["sweep.seed=3"], "override 'sweep.seed=3'"),
    ("override-control-char", BASE, ["train.steps=1\x01"], "unacceptable character"),
    # --- command-line arguments
    ("workers-zero", BASE, ["--workers", "0"], "--workers: 0 is not a number of workers (1–1024)"),
    ("workers-text", BASE, ["--workers", "many"], "--workers: not a number"),
    ("tracking-uri-empty", BASE, ["--tracking-uri", ""], "--tracking-uri: empty"),
    ("tracking-uri-memory", BASE, ["--tracking-uri", "sqlite://"], "an in-memory store"),
    ("tracking-uri-a-path", BASE, ["--tracking-uri", "results/m.db"], "a path, not a URI"),
    ("slurm-folder-local", BASE, ["--slurm-folder", "spool"], "needs --executor slurm"),
    (
        "tracking-uri-proc",
        BASE,
        ["--tracking-uri", "sqlite:////proc/m.db"],
        "cannot write in /proc",
    ),
    ("ray-address-alone", BASE, ["--ray-address", "127.0.0.1:1"], "needs --executor ray"),
]


def run(
    args: list[str], cwd: Path, timeout: float = 60, env: dict | None = None
) -> tuple[subprocess.CompletedProcess, float]:
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"} | (env or {})
    t0 = time.monotonic()
    proc = subprocess.run(
        [sys.executable, "-m", "rnnlab", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
        stdin=subprocess.DEVNULL,
    )
    return proc, time.monotonic() - t0


def assert_refused(proc: subprocess.CompletedProcess, seconds: float, expected: str) -> None:
    lines = [line for line in proc.stderr.strip().splitlines() if " grid point(s), " not in line]
    assert proc.returncode == 2, (proc.returncode, proc.stdout, proc.stderr)
    assert "Traceback" not in proc.stderr
    assert len(lines) == 1 and lines[0].startswith("error: "), lines
    assert expected in lines[0], lines[0]
    assert seconds < 20, f"took {seconds:.1f} s"


def experiment_file(tmp_path: Path, content) -> str:
    if content == "FIFO":
        os.mkfifo(tmp_path / "e.yaml")
        return str(tmp_path / "e.yaml")
    if content == "DIR":
        (tmp_path / "e.yaml").mkdir()
        return str(tmp_path / "e.yaml")
    if content == "MISSING":
        return str(tmp_path / "e.yaml")
    if content == "/dev/zero":
        return content
    path = tmp_path / "e.yaml"
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    return str(path)


def attempt(case: tuple, folder: Path) -> dict:
    """Run one case as a user would: ``sweep`` into a store under ``folder``, then for a bad
    file ``validate`` too (it reads files the same way)."""
    _, content, extra, expected = case
    folder.mkdir()
    path = experiment_file(folder, content)
    store = folder / "store"
    uri = (
        ["--tracking-uri", f"sqlite:///{store / 'mlflow.db'}"]
        if "--tracking-uri" not in extra
        else []
    )
    out = {"sweep": run(["sweep", path, *extra, *uri], folder), "store": store, "folder": folder}
    if expected and not extra and content not in ("FIFO", "DIR", "MISSING", "/dev/zero"):
        out["validate"] = run(["validate", path], folder)
    return out


@pytest.fixture(scope="module")
def outcomes(tmp_path_factory) -> dict:
    """Every case at once, three at a time: each is a separate process in its own folder, and
    the answer-in-seconds check holds under that load too."""
    from concurrent.futures import ThreadPoolExecutor

    root = tmp_path_factory.mktemp("hostile")
    with ThreadPoolExecutor(3) as pool:
        futures = {c[0]: pool.submit(attempt, c, root / c[0]) for c in CASES}
    return {name: fut.result() for name, fut in futures.items()}


@pytest.mark.parametrize("case", [c[0] for c in CASES])
def test_bad_input_is_one_line_exit_2_and_writes_nothing(outcomes, case):
    expected = next(c[3] for c in CASES if c[0] == case)
    out = outcomes[case]
    proc, seconds = out["sweep"]
    if expected is None:  # a control: this one is fine
        assert proc.returncode == 0, proc.stderr
        return
    assert_refused(proc, seconds, expected)
    assert not out["store"].exists(), "the store was created"
    folder = out["folder"]
    assert not (folder / "results").exists() and not (folder / "mlruns").exists()
    if "validate" in out:
        assert_refused(*out["validate"], expected)


# ------------------------------------------------------------ store and server cases
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def snapshot(folder: Path) -> dict:
    return {p: p.stat().st_mtime_ns for p in folder.rglob("*")} if folder.exists() else {}


@pytest.fixture(scope="module")
def stored(tmp_path_factory) -> tuple[Path, Path]:
    """A store with one finished experiment ('hostile') and one deleted one ('gone')."""
    tmp = tmp_path_factory.mktemp("stored")
    (tmp / "e.yaml").write_text(BASE)
    (tmp / "gone.yaml").write_text(BASE.replace("hostile", "gone"))
    db = tmp / "store" / "mlflow.db"
    for name in ("e.yaml", "gone.yaml"):
        sweep = ["sweep", str(tmp / name), "--workers", "1", "--tracking-uri", f"sqlite:///{db}"]
        proc, _ = run(sweep, tmp, 300)
        assert proc.returncode == 0, proc.stderr
    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{db}")
    client.delete_experiment(client.get_experiment_by_name("gone").experiment_id)
    return tmp, db


STORE_CASES = [
    ("uri-is-directory", ["sweep", "{e}", "--tracking-uri", "sqlite:///{dir}"], "is a directory"),
    ("deleted-experiment", ["sweep", "{gone}", "--tracking-uri", "sqlite:///{db}"], "was deleted"),
    (
        "report-missing-store",
        ["report", "--tracking-uri", "sqlite:///{tmp}/none/m.db"],
        "no store there yet",
    ),
    (
        "report-unknown-experiment",
        ["report", "--experiment", "nope", "--tracking-uri", "sqlite:///{db}"],
        "nope",
    ),
    (
        "ui-port",
        ["ui", "--port", "99999", "--tracking-uri", "sqlite:///{db}"],
        "99999 is not a port",
    ),
    (
        "report-where-misspelt",
        ["report", "--where", "model.hiden_size=4", "--tracking-uri", "sqlite:///{db}"],
        "did you mean 'model.hidden_size'?",
    ),
    (
        "report-out-is-a-file",
        ["report", "--tracking-uri", "sqlite:///{db}", "--out", "{e}"],
        "not a folder",
    ),
    (
        "report-out-below-a-file",
        ["report", "--tracking-uri", "sqlite:///{db}", "--out", "{e}/figures"],
        "is a file, not a folder",
    ),
    ("report-out-empty", ["report", "--tracking-uri", "sqlite:///{db}", "--out", ""], "empty path"),
    (
        "ui-port-in-use",
        ["ui", "--port", "{busy}", "--tracking-uri", "sqlite:///{db}"],
        "is in use",
    ),
    ("theory-inf", ["theory", "--activation", "tanh", "--gain", "inf", "--json"], "finite number"),
    (
        "theory-activation",
        ["theory", "--activation", "tahn", "--gain", "1"],
        "'tahn' is not one of",
    ),
    (
        "theory-negative",
        ["theory", "--activation", "tanh", "--gain", "-1"],
        "--gain: must be in (0, 1e6]",
    ),
    (
        "dead-server",
        ["sweep", "{e}", "--tracking-uri", "http://127.0.0.1:{port}"],
        "cannot use the MLflow tracking store",
    ),
    (
        "dead-ray-head",
        [
            "sweep",
            "{e}",
            "--executor",
            "ray",
            "--ray-address",
            "127.0.0.1:{port}",
            "--tracking-uri",
            "http://127.0.0.1:{port}",
        ],
        "no Ray head answers",
    ),
]


@pytest.mark.slow
@pytest.mark.parametrize(
    "args, expected", [c[1:] for c in STORE_CASES], ids=[c[0] for c in STORE_CASES]
)
def test_bad_store_and_command_input_is_refused_fast(stored, args, expected):
    tmp, db = stored
    fields = {
        "e": tmp / "e.yaml",
        "gone": tmp / "gone.yaml",
        "db": db,
        "dir": db.parent,
        "tmp": tmp,
        "port": free_port(),
    }
    before = snapshot(db.parent)
    with socket.socket() as busy:  # a port another server listens on
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        fields["busy"] = busy.getsockname()[1]
        proc, seconds = run([a.format(**fields) for a in args], tmp)
    assert_refused(proc, seconds, expected)
    assert snapshot(db.parent) == before, "the store changed"
    assert not (tmp / "none").exists()


def test_a_reader_that_goes_away_is_not_an_internal_error(tmp_path):
    """``rnnlab sweep FILE --dry-run | head -1``: the listing's reader closes the pipe; the
    command stops quietly with status 1, as Python does on EPIPE, not an 'internal error'."""
    path = tmp_path / "e.yaml"
    path.write_text(BASE + "sweep:\n  seed: [" + ", ".join(map(str, range(5000))) + "]\n")
    proc = subprocess.Popen(
        [sys.executable, "-m", "rnnlab", "sweep", str(path), "--dry-run"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        cwd=tmp_path,
    )
    assert proc.stdout.readline()  # one line, then the reader is gone
    proc.stdout.close()
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=60) == 1 and err == "", err


def test_theory_json_is_valid_json_at_the_critical_point():
    import json

    proc, _ = run(["theory", "--activation", "linear", "--gain", "1", "--json"], ROOT)
    assert proc.returncode == 0
    values = json.loads(proc.stdout)  # strict JSON: no Infinity
    assert values["chi1"] == 1.0 and values["depth_scale"] is None


@pytest.mark.parametrize(
    "variable, value",
    [
        ("RNNLAB_MEASURE_THREADS", "many"),  # the values: tests/test_train.py
        ("RNNLAB_TRITON_TILE", "block_b=4,colour=1"),  # tests/test_triton_kernel.py
    ],
)
def test_a_bad_tuning_variable_is_refused_before_anything_is_written(tmp_path, variable, value):
    """The environment is input too: the workers read these, so the CLI checks them first
    (the Triton tile where Triton is installed: nothing else reads it)."""
    if variable == "RNNLAB_TRITON_TILE":
        pytest.importorskip("triton")
    path = experiment_file(tmp_path, BASE)
    store = tmp_path / "store"
    uri = f"sqlite:///{store / 'mlflow.db'}"
    proc, seconds = run(["sweep", path, "--tracking-uri", uri], tmp_path, env={variable: value})
    assert_refused(proc, seconds, f"{variable}={value!r}")
    assert not store.exists()
