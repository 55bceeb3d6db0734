"""The C++ BPTT loops (rnnlab/model/backends/csrc/elman.cpp): compiled once, cached, loaded on first use.

``make install`` builds them (``python -m rnnlab.model.backends.cpp``, about 20 s) into PyTorch's extension
cache (``$TORCH_EXTENSIONS_DIR``, default ``~/.cache/torch_extensions``); later loads take
milliseconds. Without a C++ compiler, or with ``RNNLAB_PURE_PYTHON=1``, rnnlab runs the same
loops in Python (about 10–20 % slower at the benchmark's small shapes) and says so once.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.util
import os
import sys
import time
import warnings
from pathlib import Path

SOURCE = Path(__file__).parent / "csrc" / "elman.cpp"


def _name() -> str:
    """Module name keyed on the source and the torch build, so a change means a rebuild."""
    import torch

    key = hashlib.sha256(SOURCE.read_bytes() + torch.__version__.encode()).hexdigest()[:12]
    return f"rnnlab_elman_{key}"


def _build_dir(name: str) -> Path:
    import torch

    root = os.environ.get("TORCH_EXTENSIONS_DIR") or Path.home() / ".cache" / "torch_extensions"
    device = "cu" if torch.version.cuda else "cpu"
    flavour = f"py{sys.version_info.major}{sys.version_info.minor}_{device}"
    return Path(root) / flavour / name


@functools.cache
def loops():
    """The compiled module (``forward_loop``, ``backward_loop``), or None for the Python loops."""
    if os.environ.get("RNNLAB_PURE_PYTHON"):
        return None
    name = _name()
    built = _build_dir(name) / f"{name}.so"
    if built.exists():  # fast path: import the cached build directly (ms, not a ninja run)
        spec = importlib.util.spec_from_file_location(name, built)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module
    try:
        from torch.utils.cpp_extension import load

        _build_dir(name).mkdir(parents=True, exist_ok=True)
        return load(
            name=name,
            sources=[str(SOURCE)],
            extra_cflags=["-O3"],
            build_directory=str(_build_dir(name)),
            verbose=False,
        )
    except Exception as e:  # no compiler, no headers, read-only cache…: stay correct, be slower
        reason = str(e).strip().splitlines()[-1] if str(e).strip() else type(e).__name__
        warnings.warn(
            f"rnnlab: C++ BPTT loops unavailable ({reason}); using the Python loops",
            RuntimeWarning,
            stacklevel=2,
        )
        return None


if __name__ == "__main__":
    t0 = time.perf_counter()
    ok = loops() is not None
    print(
        f"rnnlab C++ BPTT loops: {'ready' if ok else 'unavailable, Python loops in use'} "
        f"({time.perf_counter() - t0:.1f} s)",
        file=sys.stderr,
    )
