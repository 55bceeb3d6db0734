"""A CPU stand-in for CUDA graphs, to test on a machine without a GPU what ``rnnlab.train``
captures: ``capture(fn)`` runs fn once, recording every ATen call below autograd (a
``TorchDispatchMode``), then puts back every tensor that existed before and was written, and
fills those it made with garbage (NaN, or 1s), since a capture computes nothing; ``replay()``
makes the recorded calls again on the recorded tensors with the recorded arguments, writing
each new result into the tensor the capture made.

That is a CUDA graph's contract: Python runs once, so a Python number that changes from step
to step (a step count, a lazily made state) is frozen at its captured value, a tensor made
during the capture is reused by every replay, and anything that needs the host to read a
device value (``.item()``, ``.tolist()``, ``torch.equal``) is an error during the capture.
"""

from __future__ import annotations

import math

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

aten = torch.ops.aten
SYNCS = {aten._local_scalar_dense.default, aten.equal.default, aten.is_nonzero.default}
"""Calls that hand a device value to the host: not allowed while a CUDA graph captures."""


class _Recorder(TorchDispatchMode):
    def __init__(self):
        super().__init__()
        self.calls: list = []
        self.made: set[int] = set()  # storages made during the capture
        self.before: list[tuple[torch.Tensor, torch.Tensor]] = []  # (tensor, its old values)

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func in SYNCS:
            raise RuntimeError(f"{func} reads a device value on the host during a capture")
        for arg, value in zip(func._schema.arguments, _values(func, args, kwargs), strict=True):
            written = arg.alias_info is not None and arg.alias_info.is_write
            for t in tree_flatten(value)[0] if written else ():
                if isinstance(t, torch.Tensor) and _storage(t) not in self.made:
                    self.before.append((t, t.clone()))
        out = func(*args, **kwargs)
        if not _aliases(func):  # new tensors (a view or an in-place result is not)
            self.made |= {_storage(t) for t in tree_flatten(out)[0] if isinstance(t, torch.Tensor)}
        self.calls.append((func, args, kwargs, out))
        return out

    def undo(self) -> None:
        """Put back what the capture wrote into tensors that existed before it, and leave
        garbage in those it made: a capture computes nothing."""
        for t, old in reversed(self.before):
            t.copy_(old)
        for func, _, _, out in self.calls:
            for t in tree_flatten(out)[0] if not _aliases(func) else ():
                if isinstance(t, torch.Tensor):
                    t.fill_(math.nan if t.is_floating_point() else 1)


def _aliases(func) -> bool:
    """Whether the call returns a view of, or writes into, one of its arguments."""
    return any(r.alias_info is not None for r in func._schema.returns)


def _storage(t: torch.Tensor) -> int:
    return t.untyped_storage().data_ptr()


def _values(func, args, kwargs) -> list:
    """The call's argument values in its schema's order (defaults where not given)."""
    out = []
    for i, arg in enumerate(func._schema.arguments):
        if i < len(args) and not arg.kwarg_only:
            out.append(args[i])
        else:
            out.append(kwargs.get(arg.name, arg.default_value))
    return out


class Captures:
    """``capture`` for ``rnnlab.train._Graphs``, counting captures and replays."""

    def __init__(self):
        self.captured = 0
        self.replayed = 0

    def __call__(self, fn):
        recorder = _Recorder()
        with recorder:
            out = fn()
        with torch._C._AutoDispatchBelowADInplaceOrView():
            recorder.undo()
        self.captured += 1

        def replay():
            self.replayed += 1
            with torch._C._AutoDispatchBelowADInplaceOrView():  # where the calls were seen
                for func, args, kwargs, result in recorder.calls:
                    again = func(*args, **kwargs)
                    if _aliases(func):
                        continue  # a view, or written in place: it is the recorded tensor
                    done = zip(tree_flatten(result)[0], tree_flatten(again)[0], strict=True)
                    for old, new in done:
                        if isinstance(old, torch.Tensor):
                            old.copy_(new)

        return replay, out
