"""Fixtures shared by the backend tests."""

from __future__ import annotations

from pathlib import Path

import pytest

import vaqf
from vaqf.examples import example_model


@pytest.fixture(scope="module")
def compiled(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("csim") / "mlp"
    vaqf.compile_model(example_model("mlp"), out)
    return out
