"""Compile the Triton Elman kernels for a GPU without one, and report registers and spills.

Triton compiles down to PTX on any machine; the ``ptxas`` it bundles then reports what one
program of each kernel needs. A tiling that spills (or fails to compile) here will be slow (or
fail) on the card, so check a change to ``triton_elman._meta`` or to the kernels here first:

    python -m rnnlab.model.backends.compile_check                  # the default tilings, sm_90a
    python -m rnnlab.model.backends.compile_check --tile dot=0,block_b=1,warps=4 --H 64 128

Kernels: the forward and backward recursions, and in float64 the tangent recursion of the
Lyapunov estimate (``_elman_tangent``). Columns: kernel, dtype, H, activation, the tile
(product form — sum, dot or wide<chunk> —, BLOCK_B, warps), shared memory in bytes, registers
per thread, spilled bytes (stores / loads).
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import tempfile
from pathlib import Path

import torch
import triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource

from rnnlab.model.backends import triton_elman as te

DTYPES = {"fp32": torch.float32, "fp64": torch.float64}


def _signature(kernel: str, dtype: str) -> dict:
    if kernel == "tangent":
        ptrs = ["u_ptr", "wt_ptr", "v_ptr", "out_ptr"]
        ints = ["T", "B", "H", "transient", "qr_every", "s_uk", "s_ut", "s_ub"]
        ints += ["s_wk", "s_wi", "s_wj", "s_vb", "s_ok"]
        return {**{p: f"*{dtype}" for p in ptrs}, **dict.fromkeys(ints, "i32")}
    ptrs = ["hs_ptr", "wt_ptr"] if kernel == "forward" else ["dz_ptr", "hs_ptr", "w_ptr", "n_ptr"]
    ints = ["last_d", "last_h", "last_n"] if kernel == "backward" else []
    ints += ["T", "B", "H"]
    if kernel == "forward":
        ints += ["s_hk", "s_ht", "s_hb", "s_wk", "s_wi", "s_wj"]
    else:
        ints += ["s_dk", "s_dt", "s_db", "s_hk", "s_ht", "s_hb", "s_wk", "s_wi", "s_wj"]
        ints += ["s_nt", "s_nk"]
    return {**{p: f"*{dtype}" for p in ptrs}, **dict.fromkeys(ints, "i32")}


def _ptxas_report(ptx: str, arch: str) -> str:
    """ptxas -v on the PTX: the first bundled ptxas that accepts its version wins."""
    bin_dir = Path(triton.__file__).parent / "backends" / "nvidia" / "bin"
    with tempfile.NamedTemporaryFile("w", suffix=".ptx", delete=False) as f:
        f.write(ptx)
    try:
        for name in ("ptxas-blackwell", "ptxas"):
            exe = bin_dir / name
            if not exe.exists():
                continue
            done = subprocess.run(
                [str(exe), "-v", "--gpu-name", arch, f.name, "-o", os.devnull],
                capture_output=True,
                text=True,
            )
            if done.returncode == 0:
                return done.stderr
        return ""
    finally:
        os.unlink(f.name)


def check(kernel: str, dtype: str, H: int, B: int, activation: str, tile: str, cc: int) -> str:
    os.environ["RNNLAB_TRITON_TILE"] = tile
    meta = te._meta(B, H, DTYPES[dtype])
    if kernel == "tangent":
        meta = te._tangent_meta(H) | {"WIDE": False, "DOT": False}
    wide = meta["WIDE"]
    consts = te._act(activation) | {"BLOCK_B": meta["BLOCK_B"]}
    consts |= {"CHUNK": meta["CHUNK"]} if wide else {"BLOCK_H": meta["BLOCK_H"], "DOT": meta["DOT"]}
    consts |= {"NORMS": True} if kernel == "backward" else {"LIBDEVICE_TANH": True}
    if kernel == "tangent":  # no product choice
        consts.pop("DOT")
    kernels = {
        ("forward", False): te._elman_forward,
        ("backward", False): te._elman_backward,
        ("forward", True): te._elman_forward_wide,
        ("backward", True): te._elman_backward_wide,
        ("tangent", False): te._elman_tangent,
    }
    fn = triton.jit(kernels[kernel, wide])
    sig = _signature(kernel, dtype) | dict.fromkeys(consts, "constexpr")
    src = ASTSource(
        fn=fn, signature=sig, constexprs={(fn.arg_names.index(k),): v for k, v in consts.items()}
    )
    kind = f"wide{meta['CHUNK']}" if wide else "dot" if meta["DOT"] else "sum"
    form = f"{kind}/{meta['BLOCK_B']}/w{meta['num_warps']}"
    head = f"{kernel:>8} {dtype} H={H:<4} {activation:<10} {form:<12}"
    try:
        compiled = triton.compile(
            src,
            target=GPUTarget("cuda", cc, 32),
            options={"num_warps": meta["num_warps"], "num_stages": 1},
        )
    except Exception as e:
        return f"{head} FAILS TO COMPILE: {str(e).strip().splitlines()[-1][:120]}"
    report = _ptxas_report(compiled.asm["ptx"], f"sm_{cc}a" if cc == 90 else f"sm_{cc}")
    regs = re.search(r"Used (\d+) registers", report)
    spill = re.search(r"(\d+) bytes spill stores, (\d+) bytes spill loads", report)
    return (
        f"{head} smem {compiled.metadata.shared:>6}  regs {regs.group(1) if regs else '?':>3}  "
        f"spills {spill.group(1) + '/' + spill.group(2) if spill else '?'}"
    )


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="rnnlab.model.backends.compile_check", description=__doc__)
    p.add_argument("--cc", type=int, default=90, help="compute capability (90: H100/H200)")
    p.add_argument("--H", type=int, nargs="+", default=[16, 32, 64, 128, 256, 512])
    p.add_argument("--B", type=int, nargs="+", default=[16, 64], help="picks the default tile")
    p.add_argument("--dtype", nargs="+", default=["fp32", "fp64"], choices=list(DTYPES))
    p.add_argument("--activation", nargs="+", default=["tanh", "sigmoid"])
    p.add_argument("--tile", default="", help="an RNNLAB_TRITON_TILE value (default: _meta's)")
    args = p.parse_args(argv)
    os.environ.setdefault("TRITON_DEFAULT_FP_FUSION", "1")
    print(f"triton {triton.__version__}, sm_{args.cc}")
    for dtype in args.dtype:
        for H in args.H:
            if te.MAX_WIDE_H < H:
                continue
            for B in args.B:
                for act in args.activation:
                    for kernel in ("forward", "backward"):
                        print(check(kernel, dtype, H, B, act, args.tile, args.cc), flush=True)
                    if dtype == "fp64" and te.MAX_H[torch.float64] >= H:  # λ_max's recursion
                        print(check("tangent", dtype, H, B, act, args.tile, args.cc), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
