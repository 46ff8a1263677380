"""Train-step model FLOP/s as a fraction of the machine's own f32 matmul FLOP/s.

Both are measured in this process, interleaved round by round (the machines are noisy),
and the ratio of medians is printed. CPU default: d=512, 8 layers, 8 heads, seq 256,
batch 16, f32 (target >= 50% of the matmul rate). On a GPU (``--gpu``): GPT-2-small shape
(d=768, 12 layers, seq 1024, bf16 compute) and MFU against ``--peak_tflops`` (H100 dense
bf16: 989). The step is jaxlab's own (:mod:`_train_setup`) with the registry's
``--optimizer`` (default ``adamw``; ``muon`` and ``trasmuon`` run Newton-Schulz in bf16
on a GPU).

    python benchmarks/train_step.py [--rounds 5] [--optimizer muon] [--out FILE]
"""

from __future__ import annotations

import argparse
import platform
import statistics

from jaxlab.train.host_memory import keep_host_memory

KEPT_HOST_MEMORY = keep_host_memory()  # as ``python -m jaxlab.train`` does, before JAX starts

import jax
import jax.numpy as jnp
import numpy as np
from _timing import median_seconds
from _train_setup import GPT2_SMALL, jaxlab_train_step

from jaxlab.nn import ModelConfig, flops_per_token


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--gpu", action="store_true", help="GPT-2-small shape in bf16")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--reps", type=int, default=5)
    p.add_argument("--matmul_n", type=int, default=2048)
    p.add_argument("--peak_tflops", type=float, default=989.0)
    p.add_argument("--optimizer", default="adamw", help="registry name: adamw, muon, trasmuon")
    p.add_argument("--out", default=None, help="also write the report to this file")
    a = p.parse_args()

    if a.gpu:
        cfg = ModelConfig(**GPT2_SMALL, compute_dtype="bfloat16")
        seq, batch, mm_dtype = 1024, 16, jnp.bfloat16
    else:
        cfg = ModelConfig(d_model=512, n_layers=8, n_heads=8, max_seq_len=256)
        seq, batch, mm_dtype = 256, 16, jnp.float32
    ns_bf16 = a.gpu and a.optimizer in ("muon", "trasmuon")
    bindings = [f"{a.optimizer}.ns_dtype = 'bfloat16'"] if ns_bf16 else []
    train_once = jaxlab_train_step(cfg, batch, seq, a.optimizer, bindings).step
    rng = np.random.default_rng(0)

    n = a.matmul_n
    x = jnp.asarray(rng.standard_normal((n, n)), mm_dtype)
    y = jnp.asarray(rng.standard_normal((n, n)), mm_dtype)
    matmul = jax.jit(lambda u, v: u @ v)

    step_flops = flops_per_token(cfg, seq)["train"] * batch * seq
    mm_rates, step_rates = [], []
    for _ in range(a.rounds):
        mm_rates.append(2 * n**3 / median_seconds(matmul, x, y, reps=a.reps))
        step_rates.append(step_flops / median_seconds(train_once, reps=a.reps))
    mm, st = statistics.median(mm_rates), statistics.median(step_rates)
    dev = jax.devices()[0]
    lines = [
        (f"device: {dev.device_kind} ({jax.default_backend()}, {jax.device_count()} device(s)), "
         f"host {platform.machine()}, jax {jax.__version__}"),
        (f"model: d={cfg.d_model} L={cfg.n_layers} H={cfg.n_heads} seq={seq} batch={batch} "
         f"compute={cfg.compute_dtype} attention={cfg.attention_impl} remat={cfg.remat} "
         f"optimizer={a.optimizer}{' (bf16 NS)' if bindings else ''} "
         f"train FLOPs/step={step_flops:.3e}"),
        f"host malloc keeps freed memory (jaxlab.train.host_memory, as the CLI): {KEPT_HOST_MEMORY}",
        f"matmul {n}x{n} {jnp.dtype(mm_dtype).name}: {mm / 1e9:.1f} GFLOP/s (median of {a.rounds})",
        f"train step: {st / 1e9:.1f} GFLOP/s, {batch * seq * st / step_flops:.0f} tokens/s",
        f"ratio train-step / matmul: {st / mm:.1%}",
    ]
    if a.gpu:
        lines.append(f"MFU vs {a.peak_tflops:.0f} TFLOP/s peak: {st / (a.peak_tflops * 1e12):.1%}")
    report = "\n".join(lines)
    print(report)
    if a.out:
        with open(a.out, "w") as f:
            f.write(report + "\n")


if __name__ == "__main__":
    main()
