"""keep_host_memory: a fresh process can apply it before JAX starts and then train."""

import subprocess
import sys

import pytest

_SCRIPT = """
from jaxlab.train.host_memory import keep_host_memory
assert keep_host_memory() is True
import jax, jax.numpy as jnp
x = jnp.ones((4096, 4096))           # 64 MB buffers, above malloc's mmap threshold
for _ in range(3):
    x = (x @ x) / 4096.0
assert float(x[0, 0]) == 1.0
print("ok")
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc malloc only")
def test_keep_host_memory_in_fresh_process():
    out = subprocess.run([sys.executable, "-c", _SCRIPT], capture_output=True, text=True,
                         timeout=120, check=True)
    assert out.stdout.strip().endswith("ok")


def test_opt_out(monkeypatch):
    from jaxlab.train.host_memory import keep_host_memory

    monkeypatch.setenv("JAXLAB_KEEP_HOST_MEMORY", "0")
    assert keep_host_memory() is False
