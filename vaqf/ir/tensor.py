"""TensorInfo: the shape and exact integer meaning of a tensor (value = scale * (q - zero_point))."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from vaqf.ir.qtype import QType, qtype_from_json


def _as_scale(scale: float | np.ndarray) -> np.ndarray:
    a = np.atleast_1d(np.asarray(scale, dtype=np.float64)).reshape(-1)
    return a


@dataclass
class TensorInfo:
    """Shape, integer type and the affine map to real numbers.

    ``scale`` is a float64 vector of length 1 (per tensor) or of the last axis' size (per channel).
    Every scale is a float32-representable number and hence an exact dyadic rational
    (a 24-bit integer times a power of two), so the meaning of every integer is exact.
    ``zero_point`` is per tensor.
    """

    shape: tuple[int, ...]
    qtype: QType
    scale: np.ndarray = field(default_factory=lambda: np.ones(1))
    zero_point: int = 0

    def __post_init__(self) -> None:
        self.shape = tuple(int(d) for d in self.shape)
        self.scale = _as_scale(self.scale)
        self.zero_point = int(self.zero_point)

    @property
    def per_channel(self) -> bool:
        return self.scale.size > 1

    @property
    def sample_shape(self) -> tuple[int, ...]:
        """The shape users see per sample: the IR's leading batch axis of 1 dropped."""
        return self.shape[1:] if self.shape and self.shape[0] == 1 else self.shape

    @property
    def size(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64))

    def dequantize(self, q: np.ndarray) -> np.ndarray:
        return self.scale * (np.asarray(q, dtype=np.float64) - self.zero_point)

    def same_meaning(self, other: TensorInfo) -> bool:
        return (self.shape == other.shape and self.qtype == other.qtype and self.zero_point == other.zero_point
                and self.scale.shape == other.scale.shape and bool(np.all(self.scale == other.scale)))

    def to_json(self) -> dict:
        return {"shape": list(self.shape), "qtype": self.qtype.to_json(),
                "scale": [float(s) for s in self.scale], "zero_point": self.zero_point}

    @classmethod
    def from_json(cls, d: dict) -> TensorInfo:
        return cls(tuple(d["shape"]), qtype_from_json(d["qtype"]), np.asarray(d["scale"], dtype=np.float64),
                   int(d["zero_point"]))

    def __str__(self) -> str:
        sc = f"{self.scale[0]:.4g}" if not self.per_channel else f"[{self.scale.size} ch]"
        zp = f", zp={self.zero_point}" if self.zero_point else ""
        return f"{self.qtype}{list(self.shape)} x {sc}{zp}"
