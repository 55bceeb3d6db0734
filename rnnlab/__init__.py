"""rnnlab: a lab bench for gradient dynamics in vanilla recurrent networks.

Data flows one way: YAML (experiments/) → ``config`` → grid of runs → ``train`` (yields
measurements, ``probes``) → ``track`` (MLflow) → ``report``. Importing this package is cheap:
torch, mlflow, pandas and seaborn are imported only by the modules that need them.

In a notebook, :func:`load_results` gives an experiment's results as the report's tidy
DataFrames (``rnnlab.report.load.Frames``)::

    import rnnlab
    r = rnnlab.load_results("vanishing")  # the store: $MLFLOW_TRACKING_URI or results/mlflow.db
    r.runs, r.history, r.profiles
"""

import atexit
import gc
import importlib
import os
import sys

__version__ = "0.1.0"

# MKL's matrix multiplies round differently depending on how their operands sit in memory,
# so a network's bits would depend on where it sits in a stack. Its strict conditional
# reproducibility mode removes that (at no measurable cost here); MKL reads the setting at
# its first call, so it is set before torch is imported. ``rnnlab.model.elman.check_reproducible``
# warns when it did not take effect (torch used before rnnlab was imported).
os.environ.setdefault("MKL_CBWR", "AUTO,STRICT")


def lazy_exports(package: str, exports: dict[str, str]):
    """A module ``__getattr__`` for ``package`` that imports each name of ``exports``
    (name → the module defining it) on first use: how a package offers names whose modules
    import MLflow, pandas or matplotlib without importing them itself."""

    def __getattr__(name: str):
        if name in exports:
            return getattr(importlib.import_module(exports[name]), name)
        raise AttributeError(f"module {package!r} has no attribute {name!r}")

    return __getattr__


def exit_quickly() -> None:
    """At this process's exit, leave what it made out of Python's last garbage collection
    (``gc.freeze`` in an exit handler): that collection sweeps every object once more, about
    1 s after MLflow, SQLAlchemy and pandas (a sweep's driver) or torch and matplotlib (its
    workers) on a 2-core CPU, in a process about to end. Other exit handlers and finalizers
    still run. Not where Triton is loaded: its bindings (nanobind) report each instance still
    alive at exit as a leak, a screenful on stderr. For the ``rnnlab`` command
    (``rnnlab.cli.entry``) and the sweep's local workers, never for a library user's process."""

    def freeze() -> None:
        if "triton" not in sys.modules:
            gc.freeze()

    atexit.register(freeze)


__getattr__ = lazy_exports(__name__, {"load_results": "rnnlab.report.load"})


__all__ = ["__version__", "load_results"]
