"""Image data: the built-in digits split, normalisation, seeded augmentation, a resumable
iterator, user .npz files and their errors."""

import numpy as np
import pytest

from jaxlab.data.images import ImageDataConfig, image_eval_batches, image_train_dataset


def test_digits_split_is_fixed_and_disjoint():
    cfg = ImageDataConfig()
    xtr, ytr = cfg.arrays("train")
    xva, yva = cfg.arrays("validation")
    assert xtr.shape == (1413, 8, 8, 1) and xva.shape == (384, 8, 8, 1)
    assert xtr.dtype == np.uint8 and set(np.unique(ytr)) == set(range(10))
    assert np.bincount(yva).min() >= 38                      # stratified: every class
    train_rows = {r.tobytes() for r in xtr.reshape(len(xtr), -1)}
    overlap = sum(r.tobytes() in train_rows for r in xva.reshape(len(xva), -1))
    assert overlap < 5   # digits has a handful of exact duplicate images, no shared rows


def test_batches_are_normalised_and_eval_covers_the_split():
    it = iter(image_train_dataset(ImageDataConfig(), batch_size=128, seed=0))
    x = np.concatenate([next(it)["images"] for _ in range(10)])
    assert abs(x.mean()) < 0.05 and abs(x.std() - 1.0) < 0.05
    ev = image_eval_batches(ImageDataConfig(), batch_size=64)
    assert len(ev) == 6 and sum(len(b["labels"]) for b in ev) == 384
    assert ev[0]["labels"].dtype == np.int32 and ev[0]["images"].shape == (64, 8, 8, 1)


def test_augmentation_is_seeded_and_the_iterator_resumes():
    cfg = ImageDataConfig(crop_padding=1, random_flip=True)
    a = iter(image_train_dataset(cfg, 16, seed=3))
    [next(a) for _ in range(5)]
    state = a.get_state()
    expected = [next(a) for _ in range(3)]
    b = iter(image_train_dataset(cfg, 16, seed=3))
    b.set_state(state)
    for e, g in zip(expected, [next(b) for _ in range(3)]):
        np.testing.assert_array_equal(e["images"], g["images"])
        np.testing.assert_array_equal(e["labels"], g["labels"])
    plain = next(iter(image_train_dataset(ImageDataConfig(), 16, seed=3)))
    first = next(iter(image_train_dataset(cfg, 16, seed=3)))
    np.testing.assert_array_equal(plain["labels"], first["labels"])   # same order
    assert not np.array_equal(plain["images"], first["images"])       # shifted / flipped


def test_process_shards_partition_the_batch():
    full = next(iter(image_train_dataset(ImageDataConfig(), 8, seed=0)))
    parts = [next(iter(image_train_dataset(ImageDataConfig(), 8, seed=0, process_index=i,
                                           process_count=2))) for i in range(2)]
    assert all(len(p["labels"]) == 4 for p in parts)
    # two processes' rows of global batch 0, in order, are one process's batch 0, with the
    # same augmentation
    for key in ("images", "labels"):
        np.testing.assert_array_equal(np.concatenate([p[key] for p in parts]), full[key])


def test_user_npz_with_a_held_out_fraction(tmp_path):
    rng = np.random.default_rng(0)
    path = tmp_path / "toy.npz"
    np.savez(path, images=rng.integers(0, 256, (50, 4, 4, 3), dtype=np.uint8),
             labels=rng.integers(0, 3, 50))
    cfg = ImageDataConfig(dataset="npz", train_path=str(path), val_fraction=0.2)
    assert len(cfg.arrays("train")[1]) == 40 and len(cfg.arrays("validation")[1]) == 10
    batch = next(iter(image_train_dataset(cfg, 8, seed=0)))
    assert batch["images"].shape == (8, 4, 4, 3)


@pytest.mark.parametrize("arrays,match", [
    ({"images": np.zeros((4, 2, 2, 1), np.uint8)}, "missing \\['labels'\\]"),
    ({"images": np.zeros((4, 2, 2), np.uint8), "labels": np.zeros(4, int)}, "uint8 \\(N, H, W, C\\)"),
    ({"images": np.zeros((4, 2, 2, 1), np.float32), "labels": np.zeros(4, int)}, "got float32"),
    ({"images": np.zeros((4, 2, 2, 1), np.uint8), "labels": np.zeros(3, int)}, "shape \\(4,\\)"),
])
def test_bad_npz_files_are_clear_errors(tmp_path, arrays, match):
    path = tmp_path / "bad.npz"
    np.savez(path, **arrays)
    with pytest.raises(ValueError, match=match):
        ImageDataConfig(dataset="npz", train_path=str(path)).arrays("train")


def test_bad_configs_are_clear_errors(tmp_path):
    with pytest.raises(ValueError, match="dataset='cifar'"):
        ImageDataConfig(dataset="cifar")
    with pytest.raises(ValueError, match="needs train_path"):
        ImageDataConfig(dataset="npz")
    with pytest.raises(FileNotFoundError, match="nope.npz"):
        ImageDataConfig(dataset="npz", train_path=str(tmp_path / "nope.npz")).arrays("train")
