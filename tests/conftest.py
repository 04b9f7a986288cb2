"""Shared fixtures: a seeded random generator, the C++ toolchain gate, hypothesis settings."""

from __future__ import annotations

import functools

import numpy as np
import pytest
from hypothesis import HealthCheck, settings

from vaqf.errors import ToolchainError

# Property tests must not depend on how fast the machine is (no deadline) and must replay the same
# examples everywhere (derandomize), so a failure seen in CI is the failure seen at a desk.
settings.register_profile("vaqf", deadline=None, derandomize=True, max_examples=300,
                          suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("thorough", deadline=None, max_examples=5000,
                          suppress_health_check=[HealthCheck.too_slow])
settings.load_profile("vaqf")

SEED = 20240531


@pytest.fixture
def rng() -> np.random.Generator:
    """A fresh generator with a fixed seed for every test: results never depend on test order."""
    return np.random.default_rng(SEED)


@functools.cache
def cxx_toolchain_problem() -> str | None:
    """Why generated C++ cannot be built here (no g++, no ap_int.h), or None when it can."""
    from vaqf.backend.csim import ap_include_dir, compiler

    try:
        compiler()
        ap_include_dir()
    except ToolchainError as e:
        return str(e)
    return None


def pytest_runtest_setup(item: pytest.Item) -> None:
    if item.get_closest_marker("cxx") is not None:
        problem = cxx_toolchain_problem()
        if problem is not None:
            pytest.skip(f"C++ build skipped: {problem}")
