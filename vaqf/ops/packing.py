"""Layout of constants in the DDR image shared by the kernels, the testbench and the host driver.

The image is a sequence of little-endian ``word_bits``-wide words; in Python each word is held as
``word_bits // 32`` uint32 lanes, lowest lane first. Matrices are packed row by row, each row starting on
a word boundary; element k of a row occupies bits [k*c, (k+1)*c) of the row's bit stream, where c is the
container width (1 for bipolar weights, where bit 1 means +1; 2, 4, 8, 16 or 32 for integers, two's
complement).
"""

from __future__ import annotations

import numpy as np

CONTAINERS = (1, 2, 4, 8, 16, 32)


def container_bits(bits: int) -> int:
    for c in CONTAINERS:
        if bits <= c:
            return c
    raise ValueError(f"no container for {bits}-bit values")


def row_words(length: int, container: int, word_bits: int) -> int:
    return -(-length * container // word_bits)


def pack_rows(values: np.ndarray, container: int, word_bits: int) -> np.ndarray:
    """Pack a [rows, length] integer matrix; returns uint32 lanes shaped [rows * row_words * word_bits/32]."""
    v = np.asarray(values, dtype=np.int64)
    if v.ndim == 1:
        v = v[None, :]
    rows, length = v.shape
    rw = row_words(length, container, word_bits)
    total_bits = rw * word_bits
    mask = (1 << container) - 1
    u = (v & mask).astype(np.uint64)
    # bit stream per row: element k at bit k*container
    bits = ((u[:, :, None] >> np.arange(container, dtype=np.uint64)) & 1).astype(np.uint8)
    bits = bits.reshape(rows, length * container)
    padded = np.zeros((rows, total_bits), dtype=np.uint8)
    padded[:, : length * container] = bits
    lanes = np.packbits(padded.reshape(rows, -1, 8), axis=-1, bitorder="little").reshape(rows, -1)
    return lanes.view("<u4").reshape(-1).astype(np.uint32) if lanes.size else np.zeros(0, np.uint32)


def pack_bipolar(weights: np.ndarray, word_bits: int) -> np.ndarray:
    """Bipolar (+1/-1) matrix to bits (1 = +1)."""
    return pack_rows((np.asarray(weights) > 0).astype(np.int64), 1, word_bits)


def pack_int32(values: np.ndarray, word_bits: int) -> np.ndarray:
    """A vector of int32 values, one per 32-bit lane, padded to whole words."""
    v = np.asarray(values, dtype=np.int64).reshape(-1)
    if v.size and (v.min() < -(2**31) or v.max() > 2**31 - 1):
        raise ValueError("value does not fit in 32 bits")
    lanes_per_word = word_bits // 32
    n = -(-v.size // lanes_per_word) * lanes_per_word
    out = np.zeros(n, dtype=np.uint32)
    out[: v.size] = (v & 0xFFFFFFFF).astype(np.uint32)
    return out
