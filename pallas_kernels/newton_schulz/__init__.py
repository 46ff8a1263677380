"""Newton-Schulz orthogonalisation (Muon) as Pallas kernels; see ``ops.newton_schulz``."""

from pallas_kernels.newton_schulz.kernel import NSBlockSizes
from pallas_kernels.newton_schulz.ops import (
    KELLER_COEFFS,
    POLAR_EXPRESS_COEFFS,
    newton_schulz,
)
from pallas_kernels.newton_schulz.reference import newton_schulz_reference

__all__ = [
    "KELLER_COEFFS",
    "POLAR_EXPRESS_COEFFS",
    "NSBlockSizes",
    "newton_schulz",
    "newton_schulz_reference",
]
