"""A tiny ViT trained on scikit-learn's 8x8 digits (float, then QAT) shared by the export tests."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("sklearn")

from vaqf.frontend.torch import TrainConfig, deit, export_qonnx, train_float, train_qat  # noqa: E402
from vaqf.frontend.torch.data import load_digits_8x8  # noqa: E402

#: patch 2 on 8x8 images: 16 tokens and a class token
TINY = {"img_size": 8, "patch_size": 2, "in_chans": 1, "embed_dim": 32, "depth": 2, "num_heads": 2,
        "mlp_ratio": 2.0, "num_classes": 10}


@contextmanager
def one_thread() -> Iterator[None]:
    """Models this small train fastest on one thread (and a busy machine's extra threads only spin)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


@dataclass
class Trained:
    qmodel: torch.nn.Module
    onnx: Path
    x_test: np.ndarray
    y_test: np.ndarray
    act_bits: int


@pytest.fixture(scope="session")
def digits() -> tuple:
    train, test = load_digits_8x8().split(0.2, seed=0)
    return train, test


@pytest.fixture(scope="session")
def float_vit(digits: tuple) -> torch.nn.Module:
    train, _ = digits
    torch.manual_seed(0)
    model = deit("custom", **TINY)
    with one_thread():
        train_float(model, torch.from_numpy(train.x), torch.from_numpy(train.y),
                    TrainConfig(epochs=40, batch_size=64, lr=3e-3, progress=False))
    return model


_TRAINED: dict[int, Trained] = {}


def trained_qat(bits: int, float_vit: torch.nn.Module, digits: tuple, folder: Path) -> Trained:
    """The float ViT fine-tuned with binary encoder weights and ``bits``-bit activations, exported."""
    if bits not in _TRAINED:
        train, test = digits
        x, y = torch.from_numpy(train.x), torch.from_numpy(train.y)
        with one_thread():
            q = train_qat(float_vit, x, y, act_bits=bits,
                          act_cfg=TrainConfig(epochs=1, batch_size=64, lr=2e-4, weight_decay=0.0, progress=False),
                          weight_cfg=TrainConfig(epochs=4, batch_size=64, lr=1e-3, weight_decay=0.0, distill=0.5,
                                                 progress=False))
        path = export_qonnx(q, folder / f"tiny_a{bits}.onnx")
        _TRAINED[bits] = Trained(q, path, test.x, test.y, bits)
    return _TRAINED[bits]


@pytest.fixture(scope="session", params=[8, 4], ids=["a8", "a4"])
def qat_vit(request: pytest.FixtureRequest, float_vit: torch.nn.Module, digits: tuple,
            tmp_path_factory: pytest.TempPathFactory) -> Trained:
    return trained_qat(request.param, float_vit, digits, tmp_path_factory.mktemp(f"qat{request.param}"))
