"""Token sources: the built-in ``pystdlib`` corpus, token files and globs of text files.

All text is tokenised byte-level (vocab 256, :mod:`jaxlab.data.tokenizer`). A source is a
1-D integer array (usually a read-only ``np.memmap``) per split.
"""

from __future__ import annotations

import glob
import hashlib
import os
import sys
import sysconfig
import zlib
from pathlib import Path

import numpy as np

from jaxlab.data.tokenizer import encode_bytes

TOKEN_DTYPES = ("uint8", "uint16", "uint32")


def cache_dir() -> Path:
    """``$JAXLAB_CACHE`` or ``~/.cache/jaxlab``."""
    return Path(os.environ.get("JAXLAB_CACHE", Path.home() / ".cache" / "jaxlab"))


def stdlib_files() -> list[Path]:
    """The standard library's ``.py`` files in a fixed order (sorted relative paths).

    ``site-packages`` is excluded so the corpus does not depend on what is installed.
    """
    root = Path(sysconfig.get_paths()["stdlib"])
    files = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if d not in ("site-packages", "__pycache__"))
        files.extend(Path(dirpath) / f for f in filenames if f.endswith(".py"))
    return sorted(files, key=lambda p: p.relative_to(root).as_posix())


def is_validation_file(relpath: str, val_percent: int) -> bool:
    """Deterministic split by file: CRC32 of the relative path modulo 100."""
    return zlib.crc32(relpath.encode()) % 100 < val_percent


def _write_atomic(path: Path, tokens: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".tmp{os.getpid()}.npy")
    np.save(tmp, tokens)
    os.replace(tmp, path)  # concurrent builders (sweep workers) race safely


def pystdlib(split: str, val_percent: int = 2) -> np.ndarray:
    """Byte tokens (uint8 memmap) of the Python standard library's source, one split.

    Built on first use into :func:`cache_dir` (about 31 MB for CPython 3.11) and then
    memory-mapped. Files are joined with a blank line; the split is by file.
    """
    if split not in ("train", "validation"):
        raise ValueError(f"split must be 'train' or 'validation', got {split!r}")
    files = stdlib_files()
    root = Path(sysconfig.get_paths()["stdlib"])
    rel = [f.relative_to(root).as_posix() for f in files]
    key = hashlib.sha1(("\n".join(rel) + sys.version).encode()).hexdigest()[:12]
    out = cache_dir() / "pystdlib" / f"{key}-v{val_percent}-{split}.npy"
    if not out.exists():
        chunks = {"train": [], "validation": []}
        for f, r in zip(files, rel):
            which = "validation" if is_validation_file(r, val_percent) else "train"
            chunks[which].append(f.read_bytes() + b"\n\n")
        for which, parts in chunks.items():
            _write_atomic(out.with_name(f"{key}-v{val_percent}-{which}.npy"),
                          np.frombuffer(b"".join(parts), dtype=np.uint8))
    return np.load(out, mmap_mode="r")


def token_file(path: str, dtype: str = "uint16") -> np.ndarray:
    """A memory-mapped token file: ``.npy`` (dtype from its header) or raw ``.bin``."""
    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"token file {str(p)!r} does not exist")
    if p.suffix == ".npy":
        arr = np.load(p, mmap_mode="r")
    elif p.suffix == ".bin":
        if dtype not in TOKEN_DTYPES:
            raise ValueError(f"token dtype {dtype!r} is not one of {TOKEN_DTYPES}")
        arr = np.memmap(p, dtype=dtype, mode="r")
    else:
        raise ValueError(f"token file {str(p)!r} must end in .npy or .bin")
    if arr.ndim != 1 or arr.dtype.name not in TOKEN_DTYPES:
        raise ValueError(
            f"token file {str(p)!r} holds a {arr.dtype} array of shape {arr.shape}; "
            f"expected a 1-D array of {TOKEN_DTYPES}"
        )
    return arr


def text_glob(pattern: str) -> np.ndarray:
    """Byte tokens of all files matching ``pattern`` (sorted), joined with blank lines."""
    files = sorted(glob.glob(pattern, recursive=True))
    if not files:
        raise FileNotFoundError(f"no text files match {pattern!r}")
    return encode_bytes(b"".join(Path(f).read_bytes() + b"\n\n" for f in files))
