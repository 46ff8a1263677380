"""Corpora, token files and the grain pipeline."""

import sysconfig
from pathlib import Path

import numpy as np
import pytest

from jaxlab.data import DataConfig, corpora, eval_batches, train_dataset
from jaxlab.data.pipeline import check_vocab
from jaxlab.data.tokenizer import decode, encode


def test_pystdlib_corpus_is_deterministic_and_split_by_file():
    train, val = corpora.pystdlib("train"), corpora.pystdlib("validation")
    assert train.dtype == np.uint8 and len(train) > 20_000_000 and len(val) > 100_000
    files = corpora.stdlib_files()
    assert files == corpora.stdlib_files()
    root = Path(sysconfig.get_paths()["stdlib"])
    rel = [f.relative_to(root).as_posix() for f in files]
    n_val = sum(corpora.is_validation_file(r, 2) for r in rel)
    assert 0 < n_val < len(files) // 10
    # The first training file's bytes open the training split.
    first_train = next(f for f, r in zip(files, rel) if not corpora.is_validation_file(r, 2))
    head = first_train.read_bytes()[:200]
    assert bytes(train[: len(head)]) == head


@pytest.mark.parametrize("dtype", ["uint16", "uint32"])
@pytest.mark.parametrize("suffix", [".bin", ".npy"])
def test_token_files(tmp_path, dtype, suffix):
    data = np.arange(1000, dtype=dtype) % 300
    path = tmp_path / f"tok{suffix}"
    if suffix == ".npy":
        np.save(path, data)
    else:
        data.tofile(path)
    arr = corpora.token_file(str(path), dtype)
    assert isinstance(arr, np.memmap) and arr.dtype == dtype
    np.testing.assert_array_equal(arr, data)
    cfg = DataConfig(dataset="tokens", train_path=str(path), token_dtype=dtype)
    batch = next(iter(train_dataset(cfg.tokens("train"), 8, 4, seed=0)))
    assert batch["inputs"].shape == (4, 8) and batch["inputs"].dtype == np.int32
    np.testing.assert_array_equal(batch["inputs"][:, 1:], batch["targets"][:, :-1])
    with pytest.raises(ValueError, match="token id 299 but the model's vocab_size is 256"):
        check_vocab(arr, 256, "the training data")


def test_missing_token_file_is_a_clear_error(tmp_path):
    missing = str(tmp_path / "nope.bin")
    with pytest.raises(FileNotFoundError, match="nope.bin"):
        DataConfig(dataset="tokens", train_path=missing).tokens("train")


def test_text_glob(tmp_path):
    (tmp_path / "a.txt").write_text("hello")
    (tmp_path / "b.txt").write_text("world")
    toks = corpora.text_glob(str(tmp_path / "*.txt"))
    assert decode(toks) == "hello\n\nworld\n\n"
    np.testing.assert_array_equal(encode("hé"), np.frombuffer("hé".encode(), np.uint8))
    with pytest.raises(FileNotFoundError, match="no text files match"):
        corpora.text_glob(str(tmp_path / "*.md"))


def test_pipeline_deterministic_and_resumable():
    tokens = np.arange(10_000, dtype=np.uint16) % 256
    a = iter(train_dataset(tokens, 16, 4, seed=1))
    first = [next(a) for _ in range(5)]
    b = iter(train_dataset(tokens, 16, 4, seed=1))
    for x in first:
        np.testing.assert_array_equal(next(b)["inputs"], x["inputs"])
    state = b.get_state()
    rest = [next(b) for _ in range(3)]
    c = iter(train_dataset(tokens, 16, 4, seed=1))
    c.set_state(state)
    for x in rest:
        np.testing.assert_array_equal(next(c)["inputs"], x["inputs"])
    other = next(iter(train_dataset(tokens, 16, 4, seed=2)))
    assert not np.array_equal(other["inputs"], first[0]["inputs"])


def test_processes_read_their_rows_of_the_same_global_batches():
    """Two processes' batches, stacked in process order, are the one-process batches row
    for row, and a checkpointed position means the same global step for both."""
    tokens = np.arange(10_000, dtype=np.uint16) % 251
    one = iter(train_dataset(tokens, 16, 8, seed=3))
    two = [iter(train_dataset(tokens, 16, 8, seed=3, process_index=p, process_count=2))
           for p in range(2)]
    for _ in range(3):
        full, parts = next(one), [next(it) for it in two]
        for key in ("inputs", "targets"):
            assert parts[0][key].shape == (4, 16)
            np.testing.assert_array_equal(np.concatenate([p[key] for p in parts]), full[key])
    assert two[0].get_state() == two[1].get_state() == one.get_state()
    with pytest.raises(ValueError, match="batch_size=8 is not divisible by 3 processes"):
        train_dataset(tokens, 16, 8, seed=0, process_index=0, process_count=3)


def test_pipeline_repeats_with_a_fresh_order_each_epoch():
    tokens = np.arange(16 * 8 + 1, dtype=np.uint16)  # exactly 8 windows of 16
    it = iter(train_dataset(tokens, 16, 4, seed=0))
    epoch1 = np.concatenate([next(it)["inputs"][:, 0] for _ in range(2)])
    epoch2 = np.concatenate([next(it)["inputs"][:, 0] for _ in range(2)])
    assert sorted(epoch1) == sorted(epoch2) == list(range(0, 128, 16))
    assert not np.array_equal(epoch1, epoch2)


def test_eval_batches_fixed():
    tokens = np.arange(5_000, dtype=np.uint16) % 256
    a, b = eval_batches(tokens, 16, 4, 3), eval_batches(tokens, 16, 4, 3)
    assert len(a) == 3
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x["inputs"], y["inputs"])
    with pytest.raises(ValueError, match="too short"):
        eval_batches(tokens[:20], 16, 4, 1)


def test_bad_dataset_name():
    with pytest.raises(ValueError, match="dataset='wiki'"):
        DataConfig(dataset="wiki")
