"""Data: the built-in corpus, token files, byte tokenizer and grain pipelines."""

from jaxlab.data.pipeline import DataConfig, eval_batches, process_rows, shard_batch, train_dataset

__all__ = ["DataConfig", "train_dataset", "eval_batches", "process_rows", "shard_batch"]
