"""Jitted optimizer-update time: every registered optimizer, and jaxlab ``muon`` vs
``optax.contrib.muon`` vs ``optax.adamw``.

Part 1: every optimizer of the registry (``jaxlab.train.optimizer.OPTIMIZERS``: adamw,
muon, trasmuon, normuon, adamuon, dion, muonclip, ...) built with its defaults as
``build_optimizer`` builds it (no clipping or other wrappers), plus Muon with AOL-
preconditioned 4-step Newton-Schulz and Dion at rank 1/4, each update's time relative to
AdamW's. Part 2: the three below. Each part runs on the same parameter tree in one
process, interleaved round by round (the machines are shared and noisy); medians and
their ratios are printed, plus the FLOP lower bound of 5-step Newton-Schulz (plain form,
``4 m^2 n + 2 m^3`` per step on the short side) at the matmul rate measured here on
NS-shaped batched dots.

Both Muons get the same semantics: the same routing (hidden matrices, scan-stacked
``(L, ...)`` kernels as L matrices, to Muon; embedding, head and norms to AdamW), Keller
coefficients, 5 steps, Frobenius normalisation, optax's bias-corrected Nesterov momentum,
eps 1e-8, the same AdamW settings.

CPU default: d=512, 8 layers, 8 heads, vocab 8192, untied head, f32. ``--gpu``: GPT-2-small
shapes (d=768, 12 layers, vocab 50304) with bf16 Newton-Schulz, plus Muon's update time
as a fraction of jaxlab's own train step with it (batch 16 x 1024), and that step's time
next to the same step with AdamW.

Host malloc is set up as ``python -m jaxlab.train`` does (:mod:`jaxlab.train.host_memory`,
freed memory kept for reuse) before JAX starts; ``JAXLAB_KEEP_HOST_MEMORY=0`` measures
with glibc's defaults, where every call page-faults its big temporaries back in.

    python benchmarks/optimizer_step.py [--rounds 5] [--out benchmarks/results/optimizer_step_cpu.txt]
"""

from __future__ import annotations

import argparse
import dataclasses
import platform
import statistics
import time

from jaxlab.train.host_memory import keep_host_memory

KEPT_HOST_MEMORY = keep_host_memory()  # as ``python -m jaxlab.train`` does, before JAX starts

import jax
import jax.numpy as jnp
import optax
from _timing import median_seconds
from _train_setup import GPT2_SMALL, jaxlab_train_step
from flax import nnx

from jaxlab.nn import ModelConfig, TransformerLM
from jaxlab.optim.muon import muon
from jaxlab.optim.newton_schulz import ns_flop_bound, ns_flops
from jaxlab.optim.qk_clip import MAX_LOGITS
from jaxlab.optim.schedules import make_schedule
from jaxlab.partition import MATRIX, ParamInfo, describe_params, infos_list
from jaxlab.train import optimizer as registry


def model_tree(cfg: ModelConfig, seed: int = 0):
    """Random params of ``cfg``'s model as a plain dict, and their ParamInfo tree."""
    abstract = nnx.state(nnx.eval_shape(lambda: TransformerLM(cfg, rngs=nnx.Rngs(0))),
                         nnx.Param)
    infos = describe_params(abstract)
    pure = nnx.to_pure_dict(abstract)
    treedef = jax.tree.structure(pure)
    leaves = [0.02 * jax.random.normal(jax.random.key(seed + k), x.shape, jnp.float32)
              for k, x in enumerate(jax.tree.leaves(pure))]
    return jax.tree.unflatten(treedef, leaves), jax.tree.unflatten(treedef, infos_list(infos))


def optax_dimension_numbers(infos):
    """optax.contrib.muon's routing equal to jaxlab's labels (None: to Adam)."""
    def one(i: ParamInfo):
        if i.label != MATRIX:
            return None
        b, f = i.batch_ndim, i.fan_in_ndim
        return optax.contrib.MuonDimensionNumbers(tuple(range(b, b + f)),
                                                  tuple(range(b + f, len(i.shape))))
    return jax.tree.map(one, infos, is_leaf=lambda x: isinstance(x, ParamInfo))


def matmul_rate(shape_bmk: tuple[int, int, int, int], dtype, reps: int) -> float:
    """FLOP/s of a batched ``(b, m, k) @ (b, k, n)`` dot."""
    b, m, k, n = shape_bmk
    x = jax.random.normal(jax.random.key(1), (b, m, k), dtype)
    y = jax.random.normal(jax.random.key(2), (b, k, n), dtype)
    f = jax.jit(lambda x, y: jnp.einsum("bmk,bkn->bmn", x, y))
    jax.block_until_ready(f(x, y))
    return 2 * b * m * k * n / median_seconds(f, x, y, reps=reps, warmup=False)


def interleaved_medians(calls: dict, rounds: int, reps: int) -> dict[str, float]:
    """``{name: median seconds}`` of ``calls[name] = (fn, args)``, round-robin."""
    times = {name: [] for name in calls}
    for _ in range(rounds):
        for name, (fn, args) in calls.items():
            times[name].append(median_seconds(fn, *args, reps=reps, warmup=False))
    return {name: statistics.median(ts) for name, ts in times.items()}


def registry_optimizers(params, infos, cfg: ModelConfig, ns_dtype: str) -> dict:
    """Every registered optimizer with its defaults, and two variants, as
    ``{name: (jitted update, args)}``; the NS dtype of the Muon family set to ``ns_dtype``."""
    lr = make_schedule(0.02, 1000)
    make_lr = lambda peak: make_schedule(peak, 1000)  # noqa: E731
    ns_family = {"muon", "trasmuon", "normuon", "adamuon", "muonclip"}
    built = {}
    for name, factory in registry.OPTIMIZERS.items():
        if name.startswith("_"):
            continue
        kw = {"ns_dtype": ns_dtype} if name in ns_family else {}
        built[name] = factory(infos, lr, make_lr, **kw)
    built["muon aol 4-step"] = registry.OPTIMIZERS["muon"](
        infos, lr, make_lr, ns_dtype=ns_dtype, ns_precondition="aol", ns_coeffs="turbo_muon",
        ns_steps=4)
    built["dion rank 1/4"] = registry.OPTIMIZERS["dion"](infos, lr, make_lr, rank_fraction=0.25)
    grads = jax.tree.map(lambda x: x * 0.5 + 0.01, params)
    extra = {MAX_LOGITS: jnp.zeros((cfg.n_layers, cfg.n_heads), jnp.float32)}
    calls, compile_s = {}, {}
    for name, tx in built.items():
        needs = registry.UPDATE_INPUTS.get(name, ())
        kwargs = {k: extra[k] for k in needs}
        fn = jax.jit(lambda g, s, p, tx=tx, kwargs=kwargs: tx.update(g, s, p, **kwargs))
        args = (grads, tx.init(params), params)
        t = time.perf_counter()
        jax.block_until_ready(fn(*args))
        compile_s[name] = time.perf_counter() - t
        calls[name] = (fn, args)
    return calls, compile_s


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--gpu", action="store_true", help="GPT-2-small shapes, bf16 NS")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--train_batch", type=int, default=16,
                   help="--gpu: sequences of 1024 tokens in the train-step comparison")
    p.add_argument("--out", default=None, help="also write the report to this file")
    a = p.parse_args()

    if a.gpu:
        cfg = ModelConfig(**GPT2_SMALL, tie_embeddings=False)
        ns_dtype, mm_dtype = "bfloat16", jnp.bfloat16
    else:
        cfg = ModelConfig(d_model=512, n_layers=8, n_heads=8, vocab_size=8192,
                          max_seq_len=256, tie_embeddings=False)
        ns_dtype, mm_dtype = "float32", jnp.float32
    params, infos = model_tree(cfg)
    reg_calls, reg_compile = registry_optimizers(params, infos, cfg, ns_dtype)
    reg_med = interleaved_medians(reg_calls, a.rounds, a.reps)
    del reg_calls
    grads = jax.tree.map(lambda x: x * 0.5 + 0.01, params)
    lr = 0.02
    txs = {
        # optax.contrib.muon's semantics: Keller scale, no decay on the Adam group.
        "jaxlab muon": muon(lr, infos, eps=1e-8, bias_correction=True, adam_b2=0.999,
                            adam_nesterov=True, weight_decay=0.1, update_scale="keller",
                            adam_weight_decay=0.0, ns_dtype=ns_dtype),
        "optax.contrib.muon": optax.contrib.muon(
            lr, weight_decay=0.1, adam_b2=0.999, eps=1e-8,
            muon_weight_dimension_numbers=optax_dimension_numbers(infos)),
        "optax.adamw": optax.adamw(lr, b2=0.999, weight_decay=0.1),
        # For reference only, NOT the same semantics: optax's own routing sends every 2-D
        # leaf (embedding, head) to NS and the scan-stacked 3-D/4-D kernels to Adam.
        "optax muon (own routing)": optax.contrib.muon(lr, weight_decay=0.1, adam_b2=0.999,
                                                       eps=1e-8),
    }
    if a.gpu:  # optax's NS computes in the momentum dtype: give both Muons bf16 momentum
        txs["optax.contrib.muon"] = optax.contrib.muon(
            lr, weight_decay=0.1, adam_b2=0.999, eps=1e-8, mu_dtype=jnp.bfloat16,
            muon_weight_dimension_numbers=optax_dimension_numbers(infos))
    calls, compile_s = {}, {}
    for name, tx in txs.items():
        state = tx.init(params)
        fn = jax.jit(tx.update)
        t = time.perf_counter()
        jax.block_until_ready(fn(grads, state, params))
        compile_s[name] = time.perf_counter() - t
        calls[name] = (fn, (grads, state, params))
    med = interleaved_medians(calls, a.rounds, a.reps)

    mats = [i for i in infos_list(infos) if i.label == MATRIX]
    shapes = [i.matrix_shape for i in mats for _ in range(i.num_matrices)]
    flops_plain = ns_flop_bound(shapes, 5)
    flops_auto = sum(min(ns_flops(m, n, 5, "plain"),
                         ns_flops(m, n, 5, "gram", () if ns_dtype == "float32" else (2,)))
                     for m, n in shapes)
    d, f = cfg.d_model, cfg.ff_dim
    # best rate seen (a lower bound on time must not inherit the noise of a busy machine)
    rate = max(matmul_rate(shape, mm_dtype, a.reps) for _ in range(a.rounds)
               for shape in ((24, d, d, f), (32, d, d, d), (1, d, d, d), (1, 2048, 2048, 2048)))
    bound = flops_plain / rate

    dev = jax.devices()[0]
    lines = [
        (f"Optimizer update (jitted tx.update), median of {a.rounds} rounds x {a.reps} calls, "
         "interleaved"),
        (f"device: {dev.platform} ({getattr(dev, 'device_kind', '')}, {platform.machine()}, "
         f"{len(jax.devices())} devices); jax {jax.__version__}, optax {optax.__version__}"),
        (f"tree: d={cfg.d_model}, {cfg.n_layers} layers (scan-stacked), {cfg.n_heads} heads, "
         f"ff={f}, vocab {cfg.vocab_size}, untied head, f32 params; NS dtype {ns_dtype}"),
        (f"matrices: {len(shapes)} ({len(mats)} stacked leaves); params "
         f"{sum(x.size for x in jax.tree.leaves(params)):,}"),
        (f"host malloc keeps freed memory (jaxlab.train.host_memory, as the CLI): "
         f"{KEPT_HOST_MEMORY}"),
        "",
        ("Registry optimizers, defaults as build_optimizer builds them (no clipping), update "
         "time and ratio to adamw:"),
    ]
    for name, t in reg_med.items():
        lines.append(f"  {name:<22} {t * 1e3:9.1f} ms  {t / reg_med['adamw']:6.1f}x adamw   "
                     f"(first call incl. compile {reg_compile[name]:.1f} s)")
    lines += [
        "",
        "jaxlab muon vs optax (same semantics, see the docstring):",
    ]
    for name in txs:
        lines.append(f"{name:<25} {med[name] * 1e3:9.1f} ms   (first call incl. compile "
                     f"{compile_s[name]:.1f} s)")
    lines += [
        "",
        (f"NS FLOPs (plain 5-step, the bound): {flops_plain / 1e9:.1f} GFLOP; "
         f"with jaxlab's auto Gram choice: {flops_auto / 1e9:.1f} GFLOP"),
        (f"best measured {jnp.dtype(mm_dtype).name} matmul rate (NS-shaped batched and "
         f"single dots, 2048^3): {rate / 1e9:.0f} GFLOP/s"),
        f"NS FLOP lower bound at that rate: {bound * 1e3:.1f} ms",
        (f"jaxlab's own floor (auto-Gram FLOPs at that rate, no other work): "
         f"{flops_auto / rate * 1e3:.1f} ms, so at best "
         f"{med['optax.contrib.muon'] / (flops_auto / rate):.2f}x faster than optax.contrib.muon "
         "without changing the arithmetic (fewer NS steps, lower precision)"),
        "",
        (f"optax.contrib.muon / jaxlab muon:   "
         f"{med['optax.contrib.muon'] / med['jaxlab muon']:.2f}x  (same semantics; target >= 1.6x)"),
        (f"optax.contrib.muon / optax.adamw:   "
         f"{med['optax.contrib.muon'] / med['optax.adamw']:.1f}x"),
        f"jaxlab muon / optax.adamw:          {med['jaxlab muon'] / med['optax.adamw']:.1f}x",
        (f"optax.contrib.muon / NS FLOP bound: "
         f"{med['optax.contrib.muon'] / bound:.2f}x"),
        f"jaxlab muon / NS FLOP bound:        {med['jaxlab muon'] / bound:.2f}x",
        (f"optax muon (own routing) / optax.adamw: "
         f"{med['optax muon (own routing)'] / med['optax.adamw']:.1f}x  (NS on embedding and "
         "head, none on the stacked blocks: a different optimizer)"),
    ]
    if a.gpu:
        lines += ["", *train_step_fraction(cfg, a)]
    else:
        lines += ["", ("GPU: no GPU figure was taken in this run (CPU only). Run with --gpu on "
                       "an H100 for GPT-2-small shapes in bf16 and the fraction of a train step.")]
    report = "\n".join(lines)
    print(report)
    if a.out:
        with open(a.out, "w") as fh:
            fh.write(report + "\n")


def train_step_fraction(cfg: ModelConfig, a) -> list[str]:
    """Muon's whole update as a fraction of jaxlab's own bf16 train step with it
    (:mod:`_train_setup`, batch ``a.train_batch`` x 1024), next to the same step with AdamW."""
    cfg = dataclasses.replace(cfg, compute_dtype="bfloat16")
    seq = cfg.max_seq_len
    muon_run = jaxlab_train_step(cfg, a.train_batch, seq, "muon", ["muon.ns_dtype = 'bfloat16'"])
    adamw_run = jaxlab_train_step(cfg, a.train_batch, seq, "adamw")
    calls = {"muon step": muon_run.step, "muon update": muon_run.update,
             "adamw step": adamw_run.step}
    for fn in calls.values():
        jax.block_until_ready(fn())
    times = {name: [] for name in calls}
    for _ in range(a.rounds):
        for name, fn in calls.items():
            times[name].append(median_seconds(fn, reps=a.reps, warmup=False))
    med = {name: statistics.median(ts) for name, ts in times.items()}
    return [
        (f"jaxlab train step (batch {a.train_batch} x {seq}, bf16 compute): with muon "
         f"{med['muon step'] * 1e3:.1f} ms, with adamw {med['adamw step'] * 1e3:.1f} ms "
         f"({med['muon step'] / med['adamw step']:.3f}x)"),
        (f"muon's update alone (registry muon, bf16 NS, with gradient clipping): "
         f"{med['muon update'] * 1e3:.1f} ms = {100 * med['muon update'] / med['muon step']:.1f}% "
         "of the muon train step (Moonlight reports 1-3%)"),
    ]


if __name__ == "__main__":
    main()
