"""Op kinds of the vaqf IR; importing this package registers all of them."""

from vaqf.ops import (  # noqa: F401  (registration side effects)
    add,
    concat,
    const,
    dense,
    im2col,
    layernorm,
    lut,
    matmul,
    pool,
    relu,
    requant,
    rescale,
    reshape,
    slice,
    softmax,
    strided_copy,
    transpose,
)
from vaqf.ops.base import Epilogue, OpSpec, get_spec, register, registered_ops

__all__ = ["Epilogue", "OpSpec", "get_spec", "register", "registered_ops"]
