"""Byte-level tokenizer: UTF-8 bytes are the tokens (vocab 256)."""

from __future__ import annotations

import numpy as np

VOCAB_SIZE = 256


def encode_bytes(data: bytes) -> np.ndarray:
    """``bytes -> (n,) uint8`` tokens."""
    return np.frombuffer(data, dtype=np.uint8)


def encode(text: str) -> np.ndarray:
    return encode_bytes(text.encode("utf-8"))


def decode(tokens) -> str:
    """Tokens -> text (invalid UTF-8 sequences are replaced)."""
    return bytes(np.asarray(tokens, dtype=np.uint8).tolist()).decode("utf-8", errors="replace")
