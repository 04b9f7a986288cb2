"""User-facing failures. Every error a user can cause is a VaqfError; anything else is a bug."""

from __future__ import annotations


class VaqfError(Exception):
    """A failure caused by the input or the request, with a message that says what to do."""


class ModelError(VaqfError):
    """The model file is malformed, unreadable or semantically invalid."""


class UnsupportedOpError(VaqfError):
    """A node whose op type (or configuration) vaqf cannot compile."""

    def __init__(self, node_name: str, op_type: str, detail: str = "") -> None:
        self.node_name = node_name
        self.op_type = op_type
        msg = f"node '{node_name}' has op type '{op_type}', which vaqf does not support"
        if detail:
            msg += f": {detail}"
        super().__init__(msg)


class CalibrationRequired(VaqfError):
    """A float tensor must be quantized but no calibration data was given."""


class InfeasibleDesign(VaqfError):
    """No design meets the frame-rate target within the board's resource cap."""

    def __init__(self, message: str, best: list[dict] | None = None) -> None:
        self.best = best or []
        super().__init__(message)


class OutputExists(VaqfError):
    """The output folder exists and was not created by vaqf (or --force was not given)."""


class ToolchainError(VaqfError):
    """An external tool (g++, headers) is missing or failed."""


class IRError(Exception):
    """The IR is inconsistent: a bug in a pass or the importer, not a user error."""


class ProjectBusy(VaqfError):
    """Another vaqf command holds the project folder: a compile writing it, or a csim reading it."""
