"""The integer arithmetic's former home: it lives in :mod:`vaqf.ir.qarith` (the IR's number semantics, below
the ops). This module re-exports it for the modules of vaqf/units and vaqf/frontend that still import it from
here; new code imports :mod:`vaqf.ir.qarith`."""

from vaqf.ir.qarith import *  # noqa: F403
from vaqf.ir.qarith import __all__  # noqa: F401
