"""Cost of sparse training: masked vs dense train step, and one mask update, side by side.

On the d=512, 8-layer TransformerLM tree (byte vocab), in one process:

- train step (forward, backward, AdamW, apply) with the plain optimizer and with the same
  optimizer wrapped by ``jaxlab.sparse.prune`` on a *non-pruning* step (masks applied to
  gradients and updates, no mask recomputation): target ratio <= 1.10;
- the optimizer update alone, dense vs masked;
- one mask update (scores, exact top-k by threshold search for every hidden matrix,
  moment reset), i.e. the extra work of a pruning step.

Rounds interleave the variants; medians are reported with the device name. Run::

    python benchmarks/sparse_overhead.py            # ~2-4 minutes on 2 CPU cores
    python benchmarks/sparse_overhead.py --quick    # d=128, 2 layers, for a smoke check
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

import jax
import jax.numpy as jnp
import optax
from _timing import call_times
from flax import nnx

from jaxlab.nn import ModelConfig, TransformerLM, cross_entropy
from jaxlab.partition import describe_params
from jaxlab.sparse import PruneSpec, PruningSchedule, plan_leaves, prune
from jaxlab.sparse.prune import compute_masks, zero_param_moments


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--d_model", type=int, default=512)
    ap.add_argument("--layers", type=int, default=8)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--seq", type=int, default=128)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--sparsity", type=float, default=0.5)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "sparse_overhead.json"))
    args = ap.parse_args()
    if args.quick:
        args.d_model, args.layers = 128, 2

    cfg = ModelConfig(vocab_size=256, d_model=args.d_model, n_layers=args.layers,
                      n_heads=max(1, args.d_model // 64), max_seq_len=args.seq)
    graphdef, params = nnx.split(TransformerLM(cfg, rngs=nnx.Rngs(params=0)), nnx.Param)
    infos = describe_params(params)
    tokens = jax.random.randint(jax.random.key(1), (args.batch, args.seq + 1), 0, 256)
    batch = {"inputs": tokens[:, :-1], "targets": tokens[:, 1:]}
    n_params = sum(x.size for x in jax.tree.leaves(params))

    dense_tx = optax.chain(optax.clip_by_global_norm(1.0), optax.adamw(1e-3))
    # the first event is far away: every timed step is a non-pruning step
    spec = PruneSpec(sparsity=args.sparsity,
                     schedule=PruningSchedule("cubic", start=10**6, end=2 * 10**6, frequency=100))
    plans = plan_leaves(infos, spec)
    sparse_tx = prune(dense_tx, infos, spec, plans)

    def make_step(tx):
        def step(p, s):
            loss, g = jax.value_and_grad(
                lambda q: cross_entropy(nnx.merge(graphdef, q)(batch["inputs"]), batch["targets"]))(p)
            u, s = tx.update(g, s, p)
            return optax.apply_updates(p, u), s, loss
        return jax.jit(step)

    def make_update(tx):
        def upd(g, s, p):
            u, s = tx.update(g, s, p)
            return optax.apply_updates(p, u), s
        return jax.jit(upd)

    grads = jax.tree.map(lambda x: 1e-3 * jnp.ones_like(x), params)
    states = {"dense": dense_tx.init(params), "masked": sparse_tx.init(params)}
    steps = {"dense": make_step(dense_tx), "masked": make_step(sparse_tx)}
    updates = {"dense": make_update(dense_tx), "masked": make_update(sparse_tx)}

    def mask_update(p, g, s):
        pl, gl = jax.tree.leaves(p), jax.tree.leaves(g)
        masks, nnz = compute_masks(plans, spec, jnp.asarray(10**6 + 500, jnp.int32), pl, gl,
                                   s.masks)
        return masks, nnz, zero_param_moments(s.inner_state, p, plans, masks)

    mask_fn = jax.jit(mask_update)

    step_t = {k: [] for k in steps}
    upd_t = {k: [] for k in steps}
    mask_t = []
    for _ in range(args.rounds):  # interleaved rounds
        for k in steps:
            step_t[k] += call_times(steps[k], params, states[k], reps=3)
            upd_t[k] += call_times(updates[k], grads, states[k], params, reps=3)
        mask_t += call_times(mask_fn, params, grads, states["masked"], reps=1)

    med = {k: statistics.median(v) for k, v in step_t.items()}
    med_u = {k: statistics.median(v) for k, v in upd_t.items()}
    result = {
        "device": f"{jax.devices()[0].platform}:{jax.devices()[0].device_kind}",
        "devices": jax.device_count(),
        "model": {"d_model": args.d_model, "n_layers": args.layers, "params": n_params,
                  "pruned_params": sum(p.size for p in plans), "pruned_leaves": len(plans)},
        "batch_tokens": args.batch * args.seq,
        "train_step_s": med,
        "train_step_ratio_masked_over_dense": med["masked"] / med["dense"],
        "optimizer_update_s": med_u,
        "optimizer_update_ratio_masked_over_dense": med_u["masked"] / med_u["dense"],
        "mask_update_s": statistics.median(mask_t),
        "mask_update_over_dense_step": statistics.median(mask_t) / med["dense"],
        "rounds": args.rounds,
    }
    print(json.dumps(result, indent=2))
    if not args.quick:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
