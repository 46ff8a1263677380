"""Pallas kernels vs XLA, side by side in one process: Newton-Schulz and block-sparse matmul.

- NS (5 Keller steps, bf16 operands, f32 accumulation): ``pallas_kernels`` NS vs the same
  iteration in XLA (``newton_schulz_reference`` under jit) at GPT-2-small shapes (12
  stacked layers: 768x768, 768x2304, 768x3072, 3072x768) and at 4096x4096, 4096x16384.
  Target: Pallas >= 1.3x XLA.
- Block-sparse matmul (tile 128, bf16): forward and forward+backward vs dense ``jnp.dot``
  at 50%, 75%, 90% tile sparsity. Target: >= 2x dense at 75%.

Each row reports median times, the ratio (XLA or dense time / Pallas time), absolute
TFLOP/s and the device name. TFLOP/s count the dense-equivalent work (NS: 4 m^2 n + 2 m^3
per step; matmul: 2 M K N), so ratios and TFLOP/s compare like with like. Run::

    python benchmarks/kernels.py               # GPU/TPU: full run, writes results/
    python benchmarks/kernels.py --quick       # CPU: tiny shapes in interpret mode (smoke)
    python benchmarks/kernels.py --tune-ns     # GPU: also sweep NS tile sizes

On a CPU without ``--quick`` it prints that no kernel figure was taken and exits 0 (Pallas
only interprets on CPU; interpret timings mean nothing).
"""

from __future__ import annotations

import argparse
import datetime
import itertools
import json
import statistics
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from pallas_kernels.block_sparse_matmul import (
    BSBlockSizes,
    block_sparse_matmul,
    make_block_meta,
)
from pallas_kernels.newton_schulz import KELLER_COEFFS, NSBlockSizes, newton_schulz
from pallas_kernels.newton_schulz.reference import newton_schulz_reference

GPT2_SMALL = [(12, 768, 768), (12, 768, 2304), (12, 768, 3072), (12, 3072, 768)]
LARGE = [(1, 4096, 4096), (1, 4096, 16384)]
SPARSITIES = (0.5, 0.75, 0.9)


def median_time(fns: dict, args: dict, rounds: int) -> dict:
    """Median wall time per name; rounds interleave the variants, after one warm-up."""
    for name, fn in fns.items():
        jax.block_until_ready(fn(*args[name]))
    times = {name: [] for name in fns}
    for _ in range(rounds):
        for name, fn in fns.items():
            t = time.perf_counter()
            jax.block_until_ready(fn(*args[name]))
            times[name].append(time.perf_counter() - t)
    return {name: statistics.median(ts) for name, ts in times.items()}


def ns_flops(shape, steps: int) -> float:
    b, m, n = shape
    m, n = min(m, n), max(m, n)
    return float(b * steps * (4 * m * m * n + 2 * m**3))


def bench_ns(shapes, block: NSBlockSizes, rounds: int, interpret: bool) -> list[dict]:
    rows = []
    coeffs = KELLER_COEFFS
    xla = jax.jit(lambda x: newton_schulz_reference(x, coeffs))
    pallas = jax.jit(lambda x: newton_schulz(x, coeffs, block=block, interpret=interpret))
    for shape in shapes:
        x = jax.random.normal(jax.random.key(0), shape, jnp.float32).astype(jnp.bfloat16)
        t = median_time({"xla": xla, "pallas": pallas}, {"xla": (x,), "pallas": (x,)}, rounds)
        err = float(jnp.linalg.norm((pallas(x) - xla(x)).astype(jnp.float32))
                    / jnp.linalg.norm(xla(x).astype(jnp.float32)))
        flops = ns_flops(shape, len(coeffs))
        rows.append({"shape": list(shape), "xla_s": t["xla"], "pallas_s": t["pallas"],
                     "ratio_xla_over_pallas": t["xla"] / t["pallas"],
                     "xla_tflops": flops / t["xla"] / 1e12,
                     "pallas_tflops_dense_equiv": flops / t["pallas"] / 1e12,
                     "rel_frobenius_vs_xla": err})
        print(f"NS {shape!s:>20}  xla {t['xla'] * 1e3:8.3f} ms  pallas "
              f"{t['pallas'] * 1e3:8.3f} ms  ratio {t['xla'] / t['pallas']:5.2f}x  "
              f"xla {rows[-1]['xla_tflops']:6.1f} TF/s  pallas "
              f"{rows[-1]['pallas_tflops_dense_equiv']:6.1f} TF/s  err {err:.1e}", flush=True)
    return rows


def tune_ns(shape, rounds: int) -> list[dict]:
    """Time the Pallas NS over a small grid of Triton tile configurations."""
    x = jax.random.normal(jax.random.key(0), shape, jnp.float32).astype(jnp.bfloat16)
    out = []
    for bm, bn, bk, warps, stages in itertools.product((64, 128), (64, 128, 256), (32, 64),
                                                      (4, 8), (3, 4)):
        block = NSBlockSizes(bm, bn, bk, num_warps=warps, num_stages=stages)
        fn = jax.jit(lambda x, block=block: newton_schulz(x, KELLER_COEFFS, block=block))
        try:
            t = median_time({"p": fn}, {"p": (x,)}, rounds)["p"]
        except Exception as e:  # noqa: BLE001  a config the compiler rejects (shared memory)
            print(f"tune {block}: failed ({type(e).__name__})")
            continue
        out.append({"block": [bm, bn, bk, warps, stages], "s": t})
        print(f"tune {shape} {out[-1]['block']}: {t * 1e3:.3f} ms", flush=True)
    return sorted(out, key=lambda r: r["s"])


def random_tile_mask(key, nk: int, nn: int, sparsity: float) -> jax.Array:
    """Exactly round((1 - sparsity) nk nn) live tiles at random positions."""
    live = round((1 - sparsity) * nk * nn)
    order = jax.random.permutation(key, nk * nn)
    return (jnp.zeros(nk * nn, bool).at[order[:live]].set(True)).reshape(nk, nn)


def bench_bsmm(shapes, tile: int, block: BSBlockSizes, rounds: int,
               interpret: bool) -> list[dict]:
    rows = []
    for m, k, n in shapes:
        kx, kw, km = jax.random.split(jax.random.key(1), 3)
        x = jax.random.normal(kx, (m, k), jnp.float32).astype(jnp.bfloat16)
        w = jax.random.normal(kw, (k, n), jnp.float32).astype(jnp.bfloat16)
        g = jnp.ones((m, n), jnp.bfloat16)
        dense = jax.jit(lambda x, w: jnp.dot(x, w, preferred_element_type=jnp.float32)
                        .astype(jnp.bfloat16))
        dense_bwd = jax.jit(lambda x, w, g, dense=dense: jax.vjp(dense, x, w)[1](g))
        sparse = jax.jit(lambda x, w, meta: block_sparse_matmul(
            x, w, meta, block=block, interpret=interpret))
        sparse_bwd = jax.jit(lambda x, w, g, meta: jax.vjp(
            lambda x, w: block_sparse_matmul(x, w, meta, block=block, interpret=interpret),
            x, w)[1](g))
        for s in SPARSITIES:
            meta = make_block_meta(random_tile_mask(km, k // tile, n // tile, s), tile, tile)
            t = median_time({"dense": dense, "sparse": sparse, "dense_bwd": dense_bwd,
                             "sparse_bwd": sparse_bwd},
                            {"dense": (x, w), "sparse": (x, w, meta), "dense_bwd": (x, w, g),
                             "sparse_bwd": (x, w, g, meta)}, rounds)
            flops = 2.0 * m * k * n
            row = {"shape_mkn": [m, k, n], "tile": tile, "sparsity": s,
                   "density_actual": float(meta.density), **{f"{a}_s": b for a, b in t.items()},
                   "ratio_fwd_dense_over_sparse": t["dense"] / t["sparse"],
                   "ratio_bwd_dense_over_sparse": t["dense_bwd"] / t["sparse_bwd"],
                   "dense_tflops": flops / t["dense"] / 1e12,
                   "sparse_tflops_live": flops * float(meta.density) / t["sparse"] / 1e12}
            rows.append(row)
            print(f"BSMM {m}x{k}x{n} s={s:.2f}  dense {t['dense'] * 1e3:7.3f} ms  sparse "
                  f"{t['sparse'] * 1e3:7.3f} ms  fwd {row['ratio_fwd_dense_over_sparse']:5.2f}x  "
                  f"bwd {row['ratio_bwd_dense_over_sparse']:5.2f}x  dense "
                  f"{row['dense_tflops']:6.1f} TF/s  sparse(live) "
                  f"{row['sparse_tflops_live']:6.1f} TF/s", flush=True)
    return rows


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="tiny shapes (CPU: interpret mode)")
    ap.add_argument("--rounds", type=int, default=20)
    ap.add_argument("--tune-ns", action="store_true", help="sweep NS tiles on 4096x4096")
    ap.add_argument("--out", default=None, help="results JSON (default: results/kernels_<device>.json)")
    args = ap.parse_args()

    dev = jax.devices()[0]
    on_cpu = dev.platform == "cpu"
    if on_cpu and not args.quick:
        print("benchmarks/kernels.py: no GPU/TPU here, so no kernel figure was taken "
              "(Pallas only interprets on CPU). Run it on a GPU or TPU, or use --quick for "
              "an interpret-mode smoke run.")
        return 0
    interpret = on_cpu
    if on_cpu:  # smoke only: exercises the code path, timings are meaningless
        ns_shapes, bs_shapes, tile, rounds = [(2, 64, 128)], [(128, 256, 256)], 32, 1
        ns_block, bs_block = NSBlockSizes(32, 32, 32), BSBlockSizes(64)
    else:
        tpu = dev.platform == "tpu"
        ns_shapes = GPT2_SMALL + ([] if args.quick else LARGE)
        bs_shapes = [(8192, 4096, 4096)] + ([] if args.quick else [(8192, 768, 3072)])
        tile, rounds = 128, (5 if args.quick else args.rounds)
        ns_block = NSBlockSizes(256, 256, 256) if tpu else NSBlockSizes(
            128, 128, 64, num_warps=8, num_stages=3)
        bs_block = BSBlockSizes(256 if tpu else 128, num_warps=None if tpu else 8,
                                num_stages=None if tpu else 3)

    result = {"device": f"{dev.platform}:{dev.device_kind}", "jax": jax.__version__,
              "python": sys.version.split()[0], "date": datetime.date.today().isoformat(),
              "interpret": interpret, "rounds": rounds,
              "ns_block": list(vars(ns_block).values()), "bsmm_block_m": bs_block.block_m}
    print(f"device {result['device']}  jax {jax.__version__}  interpret={interpret}")
    result["newton_schulz"] = bench_ns(ns_shapes, ns_block, rounds, interpret)
    result["block_sparse_matmul"] = bench_bsmm(bs_shapes, tile, bs_block, rounds, interpret)
    if args.tune_ns and not on_cpu:
        result["ns_tuning_4096"] = tune_ns((1, 4096, 4096), rounds=5)
    if on_cpu:
        print("interpret-mode smoke run: timings above are not kernel performance; "
              "nothing written")
        return 0
    out = Path(args.out) if args.out else (
        Path(__file__).parent / "results" / f"kernels_{dev.platform}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    np.set_printoptions(precision=3)
    sys.exit(main())
