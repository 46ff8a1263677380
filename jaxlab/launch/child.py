"""Exec wrapper for training subprocesses: ``python -m jaxlab.launch.child PPID CPUS -- CMD...``.

Before it becomes ``CMD`` (``os.execv``), it asks the kernel to SIGKILL it when the
thread that started it dies (``PR_SET_PDEATHSIG``), so a killed launcher leaves no
orphan training processes writing into run directories, and it pins itself to ``CPUS``
(comma-separated core ids, or ``-`` for no pinning). Doing this here rather than in a
``preexec_fn`` keeps the launcher's worker threads fork-safe. Linux only; elsewhere the
pinning and the death signal are skipped.
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys

PR_SET_PDEATHSIG = 1


def main(argv: list[str]) -> None:
    if len(argv) < 4 or argv[2] != "--":
        raise SystemExit(f"usage: python -m jaxlab.launch.child PPID CPUS -- CMD..., got {argv}")
    ppid, cpus, cmd = int(argv[0]), argv[1], argv[3:]
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        if os.getppid() != ppid:  # the launcher died before the death signal was armed
            raise SystemExit(f"launcher {ppid} is gone; not starting {cmd[:3]}")
        if cpus != "-":
            os.sched_setaffinity(0, {int(c) for c in cpus.split(",")})
    os.execvp(cmd[0], cmd)


if __name__ == "__main__":
    main(sys.argv[1:])
