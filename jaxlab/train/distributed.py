"""Joining a multi-process JAX run (``jax.distributed``) before JAX starts its backends.

``python -m jaxlab.train`` is launched once per process: with ``--coordinator_address``,
``--num_processes`` and ``--process_id`` (e.g. two processes on one host), or with
``--distributed``, which lets :func:`jax.distributed.initialize` read the cluster from the
environment (Cloud TPU, SLURM, GKE). The mesh then spans every process's devices; each
process feeds its rows of every global batch (:mod:`jaxlab.data.pipeline`), only process 0
writes metrics, plots and the summary, and orbax saves and restores the checkpoints from
every process. CPU processes talk through gloo collectives.
"""

from __future__ import annotations


def initialize(coordinator_address: str | None = None, num_processes: int | None = None,
               process_id: int | None = None, auto: bool = False) -> bool:
    """Joins the run described by the arguments (all three, or ``auto``); returns whether
    it did. Must run before the first JAX computation."""
    explicit = (coordinator_address, num_processes, process_id)
    if all(v is None for v in explicit) and not auto:
        return False
    if not auto and any(v is None for v in explicit):
        raise ValueError("--coordinator_address, --num_processes and --process_id go "
                         f"together; got {explicit}")
    if num_processes is not None and (num_processes < 1 or not 0 <= process_id < num_processes):
        raise ValueError(f"--process_id={process_id} must be in [0, --num_processes="
                         f"{num_processes})")
    import jax

    # CPU devices of several processes reduce through gloo (no effect on GPU/TPU clients)
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    if auto:
        jax.distributed.initialize()
    else:
        jax.distributed.initialize(coordinator_address=coordinator_address,
                                   num_processes=num_processes, process_id=process_id)
    return True
