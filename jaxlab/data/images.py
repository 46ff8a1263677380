"""Image-classification data: the built-in ``digits`` set and user ``.npz`` arrays, through
grain pipelines with checkpointable iterators (as the text pipelines are).

``digits`` is the UCI optical-recognition handwritten digits set as bundled with
scikit-learn (1,797 8x8 grey images, 10 classes; E. Alpaydin and C. Kaynak, 1998), shipped
inside the package as ``jaxlab/data/digits.npz`` (pixels 0..16 rescaled to 0..255) with a
fixed class-stratified split: 1,413 training and 384 validation images (3 x 128, so
evaluation batches of 16-128 cover all of it). A user set is an
``.npz`` with ``images`` uint8 ``(N, H, W, C)`` and integer ``labels (N,)``, e.g. CIFAR-10
converted once; with no ``val_path`` its last ``val_fraction`` is the validation split.

Batches are ``{"images": (B, H, W, C) float32, normalised per channel with the training
split's mean and std, "labels": (B,) int32}``. Optional augmentation of the training
stream: a random crop after zero-padding by ``crop_padding`` pixels, and a random
horizontal flip; each is seeded per example, so a resumed run sees the same batches.
"""

from __future__ import annotations

import dataclasses
import functools
from pathlib import Path

import gin
import grain
import numpy as np

from jaxlab.data.pipeline import batch_rows_of_process

DIGITS_PATH = Path(__file__).with_name("digits.npz")
IMAGE_DATASETS = ("digits", "npz")


@gin.configurable
@dataclasses.dataclass(frozen=True)
class ImageDataConfig:
    """Where images come from and how the training stream is augmented.

    Attributes:
      dataset: ``"digits"`` (built-in) or ``"npz"`` (``train_path``, optional ``val_path``).
      train_path, val_path: ``.npz`` files with ``images`` uint8 ``(N, H, W, C)`` and
        ``labels (N,)``.
      val_fraction: with ``npz`` and no ``val_path``, the last fraction held out.
      crop_padding: pad by this many zero pixels and crop back at a random offset (0: off).
      random_flip: flip training images left-right with probability 1/2.
    """

    dataset: str = "digits"
    train_path: str | None = None
    val_path: str | None = None
    val_fraction: float = 0.1
    crop_padding: int = 0
    random_flip: bool = False

    def __post_init__(self):
        if self.dataset not in IMAGE_DATASETS:
            raise ValueError(f"ImageDataConfig.dataset={self.dataset!r}; valid: {IMAGE_DATASETS}")
        if self.dataset == "npz" and not self.train_path:
            raise ValueError("ImageDataConfig.dataset='npz' needs train_path (an .npz with "
                             "'images' uint8 (N, H, W, C) and 'labels' (N,))")
        if not 0 < self.val_fraction < 1:
            raise ValueError(f"ImageDataConfig.val_fraction={self.val_fraction}; valid: (0, 1)")
        if self.crop_padding < 0:
            raise ValueError(f"ImageDataConfig.crop_padding={self.crop_padding}; valid: >= 0")

    def arrays(self, split: str) -> tuple[np.ndarray, np.ndarray]:
        """``images (N, H, W, C) uint8, labels (N,) int32`` of ``"train"`` or ``"validation"``."""
        if split not in ("train", "validation"):
            raise ValueError(f"split={split!r}; valid: 'train', 'validation'")
        return _split_arrays(self.dataset, self.train_path, self.val_path, self.val_fraction,
                             split)


def _load_npz(path: str | Path) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"image file {str(path)!r} does not exist")
    with np.load(path) as f:
        missing = {"images", "labels"} - set(f.files)
        if missing:
            raise ValueError(f"{path}: needs arrays 'images' and 'labels'; missing "
                             f"{sorted(missing)} (has {sorted(f.files)})")
        images, labels = f["images"], f["labels"]
        val = f["validation"] if "validation" in f.files else None
    if images.dtype != np.uint8 or images.ndim != 4:
        raise ValueError(f"{path}: 'images' must be uint8 (N, H, W, C); got {images.dtype} "
                         f"{images.shape}")
    if labels.shape != (images.shape[0],) or not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(f"{path}: 'labels' must be integers of shape ({images.shape[0]},); "
                         f"got {labels.dtype} {labels.shape}")
    if labels.min() < 0:
        raise ValueError(f"{path}: labels must be >= 0; got {int(labels.min())}")
    return images, labels.astype(np.int32), val


@functools.lru_cache(maxsize=8)
def _split_arrays(dataset, train_path, val_path, val_fraction, split):
    if dataset == "digits":
        images, labels, val = _load_npz(DIGITS_PATH)
        keep = val if split == "validation" else ~val
        return images[keep], labels[keep]
    if val_path:
        images, labels, _ = _load_npz(train_path if split == "train" else val_path)
        return images, labels
    images, labels, _ = _load_npz(train_path)
    cut = len(images) - max(1, round(val_fraction * len(images)))
    sl = slice(0, cut) if split == "train" else slice(cut, None)
    return images[sl], labels[sl]


def channel_stats(images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel mean and std ``(C,)`` of uint8 images, in [0, 1] units."""
    x = images.reshape(-1, images.shape[-1]).astype(np.float64) / 255.0
    return x.mean(axis=0).astype(np.float32), np.maximum(x.std(axis=0), 1e-3).astype(np.float32)


class _ImageSource:
    """Random access to ``(image, label)`` pairs."""

    def __init__(self, images: np.ndarray, labels: np.ndarray):
        self.images, self.labels = images, labels

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> dict[str, np.ndarray]:
        return {"image": self.images[int(i)], "label": self.labels[int(i)]}


def _augment(example, rng: np.random.Generator, padding: int, flip: bool):
    img = example["image"]
    if padding:
        h, w = img.shape[:2]
        padded = np.pad(img, ((padding, padding), (padding, padding), (0, 0)))
        dy, dx = rng.integers(0, 2 * padding + 1, size=2)
        img = padded[dy: dy + h, dx: dx + w]
    if flip and rng.random() < 0.5:
        img = img[:, ::-1]
    return {"image": img, "label": example["label"]}


def _to_batch(examples: dict[str, np.ndarray], mean: np.ndarray, std: np.ndarray) -> dict:
    x = examples["image"].astype(np.float32) / 255.0
    return {"images": (x - mean) / std, "labels": examples["label"].astype(np.int32)}


def image_train_dataset(cfg: ImageDataConfig, batch_size: int, seed: int,
                        process_index: int = 0, process_count: int = 1) -> grain.IterDataset:
    """Shuffled, repeated, augmented ``{"images", "labels"}`` batches; with several
    processes each returns its rows of the global batch (the same global batches, with
    the same augmentation, for every process count: :func:`batch_rows_of_process`)."""
    images, labels = cfg.arrays("train")
    mean, std = channel_stats(images)
    ds = grain.MapDataset.source(_ImageSource(images, labels)).shuffle(seed=seed).repeat(None)
    if cfg.crop_padding or cfg.random_flip:
        ds = ds.random_map(functools.partial(_augment, padding=cfg.crop_padding,
                                             flip=cfg.random_flip), seed=seed + 1)
    ds = batch_rows_of_process(ds, batch_size, process_index, process_count)
    return ds.map(functools.partial(_to_batch, mean=mean, std=std)).to_iter_dataset()


def image_eval_batches(cfg: ImageDataConfig, batch_size: int,
                       num_batches: int | None = None) -> list[dict[str, np.ndarray]]:
    """The validation split in order as full batches (all of it when ``num_batches`` is
    None; the remainder that does not fill a batch is dropped)."""
    images, labels = cfg.arrays("validation")
    mean, std = channel_stats(cfg.arrays("train")[0])
    n = len(labels) // batch_size
    if num_batches is not None:
        n = min(n, num_batches)
    if n < 1:
        raise ValueError(f"validation split ({len(labels)} images) is too short for one batch "
                         f"of {batch_size}")
    return [_to_batch({"image": images[b * batch_size:(b + 1) * batch_size],
                       "label": labels[b * batch_size:(b + 1) * batch_size]}, mean, std)
            for b in range(n)]
