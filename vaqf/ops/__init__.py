"""Op kinds of the vaqf IR; importing this package registers all of them."""

from vaqf.ops import dense, relu, requant, reshape  # noqa: F401  (registration side effects)
from vaqf.ops.base import EmitContext, Epilogue, OpSpec, get_spec, register, registered_ops

__all__ = ["EmitContext", "Epilogue", "OpSpec", "get_spec", "register", "registered_ops"]
