"""Checkpoint files that are not state dicts: one clear line, never PyTorch's advice to load with
weights_only=False (which runs the file's code)."""

from __future__ import annotations

from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

from vaqf.errors import VaqfError  # noqa: E402
from vaqf.frontend.torch.checkpoint import read_state_dict  # noqa: E402


@pytest.mark.parametrize("content", [b"this is a text file, not a checkpoint\n", b"", b"PK\x03\x04garbage",
                                     b"\x80\x04garbage"], ids=["text", "empty", "broken-zip", "broken-pickle"])
def test_garbage_checkpoint_is_a_clear_error(content: bytes, tmp_path: Path) -> None:
    p = tmp_path / "ckpt.pt"
    p.write_bytes(content)
    with pytest.raises(VaqfError) as e:
        read_state_dict(p)
    msg = str(e.value)
    assert "weights_only=False" not in msg and "\n" not in msg and str(p) in msg


class _Custom:
    pass


def test_checkpoint_with_objects_says_to_save_the_state_dict(tmp_path: Path) -> None:
    p = tmp_path / "obj.pt"
    torch.save({"w": torch.zeros(2), "extra": _Custom()}, p)
    with pytest.raises(VaqfError, match="objects other than tensors") as e:
        read_state_dict(p)
    assert "weights_only=False" not in str(e.value)


def test_plain_pickle_of_a_state_dict_still_loads(tmp_path: Path) -> None:
    p = tmp_path / "legacy.pt"
    torch.save({"w": torch.ones(3)}, p, _use_new_zipfile_serialization=False)
    assert read_state_dict(p)["w"].tolist() == [1.0, 1.0, 1.0]
