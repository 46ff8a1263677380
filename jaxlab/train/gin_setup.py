"""Gin parsing with clear errors, and the operative config written next to each run."""

from __future__ import annotations

from pathlib import Path

import gin

# Importing these registers every configurable that a binding may name.
import jaxlab.data.images  # noqa: F401
import jaxlab.data.pipeline  # noqa: F401
import jaxlab.nn.config  # noqa: F401
import jaxlab.nn.vit  # noqa: F401
import jaxlab.optim.schedules  # noqa: F401
import jaxlab.train.config  # noqa: F401
import jaxlab.train.optimizer  # noqa: F401

# Config paths such as 'jaxlab/configs/models/d128.gin' resolve from any directory.
PACKAGE_ROOT = Path(__file__).resolve().parents[2]
gin.add_config_file_search_path(str(PACKAGE_ROOT))


def resolve_gin_file(path: str) -> str:
    """``path`` as given if it exists, else relative to the jaxlab checkout."""
    if Path(path).exists():
        return path
    if (PACKAGE_ROOT / path).exists():
        return str(PACKAGE_ROOT / path)
    raise FileNotFoundError(f"gin file {path!r} does not exist (looked in . and {PACKAGE_ROOT})")


def parse_gin(files: list[str], bindings: list[str]) -> None:
    """Parses gin files then bindings; unknown configurables or parameters raise
    ``ValueError`` naming the offending binding."""
    files = [resolve_gin_file(f) for f in files]
    try:
        gin.parse_config_files_and_bindings(files, bindings, finalize_config=False)
    except (ValueError, KeyError) as e:
        raise ValueError(f"bad gin config ({e}); files={files}, bindings={bindings}") from None


def write_operative_config(workdir: str | Path) -> None:
    """Writes ``workdir/config.gin``: every binding that the run actually used."""
    Path(workdir, "config.gin").write_text(gin.operative_config_str())
