"""Block-sparse matmul ``x @ (W * block_mask)`` skipping dead tiles, with custom VJP."""

from pallas_kernels.block_sparse_matmul.kernel import BSBlockSizes
from pallas_kernels.block_sparse_matmul.meta import BlockMeta, make_block_meta
from pallas_kernels.block_sparse_matmul.ops import block_sparse_matmul
from pallas_kernels.block_sparse_matmul.reference import (
    block_sparse_matmul_reference,
    expand_block_mask,
)

__all__ = [
    "BSBlockSizes",
    "BlockMeta",
    "block_sparse_matmul",
    "block_sparse_matmul_reference",
    "expand_block_mask",
    "make_block_meta",
]
