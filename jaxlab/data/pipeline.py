"""Grain pipelines of ``(batch, seq)`` int32 language-model batches.

The train stream cuts the token array into non-overlapping windows of ``seq + 1`` tokens,
shuffles them with a seed (reshuffled each epoch), batches them and yields
``{"inputs": (B, T), "targets": (B, T)}``. Its iterator state (a small dict) is saved
with every checkpoint, so a resumed run sees exactly the batches it would have seen.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator

import gin
import grain
import jax
import numpy as np

from jaxlab.data import corpora


@gin.configurable
@dataclasses.dataclass(frozen=True)
class DataConfig:
    """Where tokens come from.

    Attributes:
      dataset: ``"pystdlib"`` (built-in corpus), ``"tokens"`` (``train_path``/``val_path``
        token files, ``.npy`` or ``.bin``), or ``"text"`` (``train_path``/``val_path``
        globs of text files, byte-level).
      train_path, val_path: paths or globs for the ``tokens`` and ``text`` datasets.
      token_dtype: dtype of raw ``.bin`` token files.
    """

    dataset: str = "pystdlib"
    train_path: str | None = None
    val_path: str | None = None
    token_dtype: str = "uint16"

    def __post_init__(self):
        valid = ("pystdlib", "tokens", "text")
        if self.dataset not in valid:
            raise ValueError(f"DataConfig.dataset={self.dataset!r}; valid: {valid}")
        if self.dataset != "pystdlib" and not self.train_path:
            raise ValueError(f"DataConfig.dataset={self.dataset!r} needs train_path")

    def tokens(self, split: str) -> np.ndarray:
        """The 1-D token array of ``split`` (``"train"`` or ``"validation"``)."""
        if self.dataset == "pystdlib":
            return corpora.pystdlib(split)
        path = self.train_path if split == "train" else (self.val_path or self.train_path)
        if self.dataset == "tokens":
            return corpora.token_file(path, self.token_dtype)
        return corpora.text_glob(path)


class WindowSource:
    """Random access to non-overlapping ``seq + 1`` windows of a token array."""

    def __init__(self, tokens: np.ndarray, seq_len: int):
        self.tokens, self.seq_len = tokens, seq_len
        self.n = (len(tokens) - 1) // seq_len
        if self.n < 1:
            raise ValueError(
                f"token array of length {len(tokens)} is too short for seq_len={seq_len}"
            )

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> np.ndarray:
        start = int(i) * self.seq_len
        return np.asarray(self.tokens[start: start + self.seq_len + 1], dtype=np.int32)


def _split_inputs_targets(batch_BxT1: np.ndarray) -> dict[str, np.ndarray]:
    return {"inputs": batch_BxT1[:, :-1], "targets": batch_BxT1[:, 1:]}


def check_vocab(tokens: np.ndarray, vocab_size: int, name: str) -> None:
    top = int(np.max(tokens[: 1 << 22])) if len(tokens) else 0
    if top >= vocab_size:
        raise ValueError(
            f"{name} contains token id {top} but the model's vocab_size is {vocab_size}"
        )


def train_dataset(tokens: np.ndarray, seq_len: int, batch_size: int, seed: int,
                  process_index: int = 0, process_count: int = 1) -> grain.IterDataset:
    """Shuffled, infinitely repeated ``{"inputs", "targets"}`` batches of ``(B, T)`` int32.

    With several processes each returns its rows of the global batch
    (:func:`batch_rows_of_process`), so every process count sees the same global batches.
    """
    ds = grain.MapDataset.source(WindowSource(tokens, seq_len))
    ds = ds.shuffle(seed=seed).repeat(None)
    ds = batch_rows_of_process(ds, batch_size, process_index, process_count)
    return ds.map(_split_inputs_targets).to_iter_dataset()


def batch_rows_of_process(ds: grain.MapDataset, batch_size: int, process_index: int = 0,
                          process_count: int = 1) -> grain.MapDataset:
    """Global batches of ``batch_size`` examples, each cut to process ``p``'s rows
    ``[p B / P, (p + 1) B / P)`` (the layout of :func:`shard_batch`). Every process builds
    the whole global batch and keeps its rows: the global batch, its row order and any
    per-example randomness are those of a one-process run, at P times the (small) cost of
    reading the examples."""
    if batch_size % process_count:
        raise ValueError(f"batch_size={batch_size} is not divisible by {process_count} processes")
    ds = ds.batch(batch_size, drop_remainder=True)
    if process_count == 1:
        return ds
    return ds.map(lambda b: rows_of_process(b, process_index, process_count))


def eval_batches(tokens: np.ndarray, seq_len: int, batch_size: int,
                 num_batches: int) -> list[dict[str, np.ndarray]]:
    """A fixed list of validation batches: the first windows of the split, in order."""
    src = WindowSource(tokens, seq_len)
    n = min(num_batches, len(src) // batch_size)
    if n < 1:
        raise ValueError(
            f"validation split ({len(tokens)} tokens) is too short for one batch of "
            f"{batch_size} x {seq_len + 1} tokens"
        )
    # Evenly spaced windows cover the whole split rather than its first file only.
    stride = len(src) // (n * batch_size)
    out = []
    for b in range(n):
        rows = [src[(b * batch_size + r) * stride] for r in range(batch_size)]
        out.append(_split_inputs_targets(np.stack(rows)))
    return out


def rows_of_process(batch, process_index: int, process_count: int):
    """Process ``p``'s rows ``[p B / P, (p + 1) B / P)`` of a global batch (an array or a
    tree of arrays with the batch axis first): the order in which :func:`shard_batch`
    lays process-local rows out along the batch axes."""
    if process_count == 1:
        return batch
    rows = len(jax.tree.leaves(batch)[0])
    if rows % process_count:
        raise ValueError(f"batch_size={rows} is not divisible by {process_count} processes")
    k = rows // process_count
    lo = process_index * k
    return jax.tree.map(lambda x: x[lo:lo + k], batch)


def process_rows(batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """This JAX process's rows of a global batch (all of it in a one-process run)."""
    return rows_of_process(batch, jax.process_index(), jax.process_count())


def shard_batch(batch: dict[str, np.ndarray], sharding: jax.sharding.Sharding) -> dict:
    """Places a host batch (this process's rows) as global arrays with ``sharding``."""
    return {k: jax.make_array_from_process_local_data(sharding, v) for k, v in batch.items()}


def iterate(ds: grain.IterDataset) -> Iterator:
    return iter(ds)
