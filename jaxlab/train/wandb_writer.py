"""Optional Weights & Biases mirror of a run's metrics (``TrainConfig.wandb_project``).

The JSONL and TensorBoard writers stay the record; this sends the same scalars to W&B.
``mode='offline'`` writes the W&B run under ``workdir/wandb`` for a later ``wandb sync``.
The W&B run id is kept in ``workdir/wandb_id``, so a resumed run continues the same W&B
run. W&B cannot take back steps it has seen: the steps a killed run logged after its last
checkpoint stay there and the resumed run's repeats of them are dropped by W&B (the
JSONL record is rewound exactly, :class:`~jaxlab.train.metrics.MetricWriter`).
Needs ``pip install 'jaxlab[wandb]'``. :func:`offline_history` reads an offline run's
logged history back without syncing it (to compare with ``metrics.jsonl``).
"""

from __future__ import annotations

import importlib
import json
import struct
import uuid
from pathlib import Path
from typing import Any

MODES = ("online", "offline", "disabled")


class WandbWriter:
    """``write(step, record)`` and ``close()``, like the metric writers, into one W&B run
    of ``project`` named after the run directory; ``config`` is shown with the run."""

    def __init__(self, workdir: str | Path, project: str, mode: str = "online",
                 config: dict[str, Any] | None = None):
        if mode not in MODES:
            raise ValueError(f"TrainConfig.wandb_mode={mode!r}; valid: {MODES}")
        try:
            wandb = importlib.import_module("wandb")
        except ImportError:
            raise ImportError("TrainConfig.wandb_project is set but wandb is not installed: "
                              "pip install 'jaxlab[wandb]'") from None
        workdir = Path(workdir)
        id_file = workdir / "wandb_id"
        if not id_file.exists():
            id_file.write_text(uuid.uuid4().hex[:12])
        self.run = wandb.init(project=project, name=workdir.name, id=id_file.read_text(),
                              resume="allow", dir=str(workdir), mode=mode,
                              config=config or {})

    def write(self, step: int, record: dict[str, Any]) -> None:
        scalars = {k: v for k, v in record.items() if k != "step" and isinstance(v, float)}
        if scalars:
            self.run.log(scalars, step=int(step))

    def close(self) -> None:
        self.run.finish()


# W&B's transaction log (``run-<id>.wandb``): a 7-byte header (``:W&B``, magic, version),
# then LevelDB-log blocks of 32 KiB holding chunks of 7-byte header (crc32c, length, type)
# + payload; types FULL 1, FIRST 2, MIDDLE 3, LAST 4; each record a protobuf ``Record``.
_HEADER, _BLOCK, _CHUNK = 7, 32768, 7


def _records(data: bytes) -> list[bytes]:
    if data[:4] != b":W&B":
        raise ValueError("not a W&B transaction log (no ':W&B' header)")
    out, parts, pos = [], [], _HEADER
    while pos + _CHUNK <= len(data):
        left = _BLOCK - pos % _BLOCK
        if left < _CHUNK:  # block trailer: padding
            pos += left
            continue
        _crc, length, kind = struct.unpack("<IHB", data[pos:pos + _CHUNK])
        if length == 0 and kind == 0:  # zero fill to the end of the block
            pos += left
            continue
        parts.append(data[pos + _CHUNK:pos + _CHUNK + length])
        pos += _CHUNK + length
        if kind in (1, 4):
            out.append(b"".join(parts))
            parts = []
    return out


def offline_history(workdir: str | Path) -> list[dict[str, Any]]:
    """The history rows (``{"_step": step, key: value, ...}``) that W&B logged offline
    for the run in ``workdir``: its latest ``workdir/wandb/offline-run-*`` directory."""
    from wandb.proto import wandb_internal_pb2

    runs = sorted(Path(workdir, "wandb").glob("offline-run-*/run-*.wandb"))
    if not runs:
        raise FileNotFoundError(f"no offline W&B run under {Path(workdir, 'wandb')}")
    rows = []
    for raw in _records(runs[-1].read_bytes()):
        record = wandb_internal_pb2.Record()
        record.ParseFromString(raw)
        if record.WhichOneof("record_type") == "history":
            rows.append({item.key or "/".join(item.nested_key): json.loads(item.value_json)
                         for item in record.history.item})
    return rows
