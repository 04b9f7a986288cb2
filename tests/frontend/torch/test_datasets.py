"""Reading the images `vaqf train` takes: .npz files, folders of class folders (Pillow), the bundled digits."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("torch")
Image = pytest.importorskip("PIL.Image")

from vaqf.errors import VaqfError  # noqa: E402
from vaqf.frontend.torch.datasets import load_images, normalization  # noqa: E402


def _npz(path: Path, **arrays: np.ndarray) -> Path:
    np.savez(path, **arrays)
    return path


def test_npz_uint8_is_scaled_and_labels_kept(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (6, 1, 8, 8), dtype=np.uint8)
    y = np.array([0, 1, 2, 0, 1, 2])
    d = load_images(_npz(tmp_path / "d.npz", images=x, labels=y), in_chans=1, img_size=8)
    np.testing.assert_array_equal(d.x, x.astype(np.float32) / 255.0)
    np.testing.assert_array_equal(d.y, y)
    # [N, H, W] is one channel; a different size is resized (bilinear) to the model's
    d = load_images(_npz(tmp_path / "e.npz", images=x[:, 0], labels=y), in_chans=1, img_size=4)
    assert d.x.shape == (6, 1, 4, 4)
    # constant images stay constant through the resize
    flat = np.full((6, 1, 8, 8), 51, dtype=np.uint8)
    d = load_images(_npz(tmp_path / "f.npz", images=flat, labels=y), in_chans=1, img_size=4)
    np.testing.assert_allclose(d.x, 0.2, atol=1e-6)


def test_normalization_per_channel(tmp_path: Path) -> None:
    x = np.full((4, 3, 2, 2), 0.5, dtype=np.float32)
    d = load_images(_npz(tmp_path / "d.npz", images=x, labels=np.array([0, 1, 0, 1])), in_chans=3, img_size=2,
                    mean=[0.5, 0.25, 0.0], std=[1.0, 0.5, 2.0])
    np.testing.assert_allclose(d.x[0, :, 0, 0], [0.0, 0.5, 0.25])
    m, s = normalization("imagenet", None, 3)
    assert m.shape == (1, 3, 1, 1) and float(s[0, 2, 0, 0]) == pytest.approx(0.225)
    with pytest.raises(VaqfError, match="one per channel"):
        normalization([0.1, 0.2], None, 3)
    with pytest.raises(VaqfError, match="RGB"):
        normalization("imagenet", None, 1)


@pytest.mark.parametrize(("arrays", "message"), [
    ({"images": np.zeros((4, 1, 8, 8))}, "no 'labels' array"),
    ({"x": np.zeros((4, 1, 8, 8)), "y": np.zeros(4)}, "no 'images' and no 'labels'"),
    ({"images": np.zeros((4, 8)), "labels": np.zeros(4, int)}, r"shape \[4, 8\]"),
    ({"images": np.zeros((4, 3, 8, 8)), "labels": np.zeros(4, int)}, "3 channels, the model takes 1"),
    ({"images": np.zeros((4, 1, 8, 8)), "labels": np.zeros(3, int)}, r"expected \[4\]"),
    ({"images": np.zeros((4, 1, 8, 8)), "labels": np.array([0, 1, 12, 1])}, "--num-classes 13"),
    ({"images": np.zeros((4, 1, 8, 8)), "labels": np.array([0, -1, 1, 1])}, "negative"),
    ({"images": np.zeros((4, 1, 8, 8)), "labels": np.array([0.5, 1, 1, 0])}, "integers"),
    ({"images": np.zeros((4, 1, 8, 8)), "labels": np.zeros(4, int)}, "same label"),
    ({"images": np.zeros((0, 1, 8, 8)), "labels": np.zeros(0, int)}, "empty"),
    ({"images": np.full((2, 1, 8, 8), np.nan), "labels": np.array([0, 1])}, "NaN"),
])
def test_npz_errors_say_what_is_wrong(tmp_path: Path, arrays: dict, message: str) -> None:
    path = _npz(tmp_path / "bad.npz", **arrays)
    with pytest.raises(VaqfError, match=message) as e:
        load_images(path, in_chans=1, img_size=8, num_classes=10)
    assert "\n" not in str(e.value)


def test_not_an_archive_or_missing(tmp_path: Path) -> None:
    np.save(tmp_path / "one.npy", np.zeros(3))
    with pytest.raises(VaqfError, match="holds one array"):
        load_images(tmp_path / "one.npy", in_chans=1, img_size=8)
    (tmp_path / "junk.npz").write_bytes(b"not a zip")
    with pytest.raises(VaqfError, match="not a readable .npz"):
        load_images(tmp_path / "junk.npz", in_chans=1, img_size=8)
    with pytest.raises(VaqfError, match="does not exist"):
        load_images(tmp_path / "nope.npz", in_chans=1, img_size=8)


def _folder(root: Path, classes: dict[str, int], size: tuple[int, int] = (12, 10), mode: str = "RGB") -> Path:
    rng = np.random.default_rng(1)
    for name, count in classes.items():
        (root / name).mkdir(parents=True)
        for i in range(count):
            shape = (size[1], size[0], 3) if mode == "RGB" else (size[1], size[0])
            Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8), mode).save(root / name / f"{i}.png")
    return root


def test_folder_of_class_folders(tmp_path: Path) -> None:
    root = _folder(tmp_path / "data", {"cat": 3, "dog": 2})
    (root / "cat" / "notes.txt").write_text("not an image")  # other files are ignored
    d = load_images(root, in_chans=3, img_size=8)
    assert d.x.shape == (5, 3, 8, 8) and d.classes == ["cat", "dog"]
    np.testing.assert_array_equal(d.y, [0, 0, 0, 1, 1])
    assert 0.0 <= d.x.min() and d.x.max() <= 1.0
    # the same pixels as Pillow's own conversion and bilinear resize
    with Image.open(root / "dog" / "1.png") as im:
        want = np.asarray(im.convert("L").resize((8, 8), Image.Resampling.BILINEAR), dtype=np.float32) / 255.0
    g = load_images(root, in_chans=1, img_size=8)
    np.testing.assert_array_equal(g.x[4, 0], want)
    c = load_images(root, in_chans=1, img_size=8, resize="crop")
    assert c.x.shape == (5, 1, 8, 8) and not np.array_equal(c.x, g.x)


def test_folder_errors(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(VaqfError, match="no class sub-folders"):
        load_images(tmp_path / "empty", in_chans=3, img_size=8)
    root = _folder(tmp_path / "d", {"a": 2})
    (root / "b").mkdir()
    with pytest.raises(VaqfError, match=r"class folder .*b holds no images"):
        load_images(root, in_chans=3, img_size=8)
    (root / "b" / "broken.png").write_bytes(b"\x89PNG not really")
    with pytest.raises(VaqfError, match="broken.png is not an image Pillow can read"):
        load_images(root, in_chans=3, img_size=8)
    root2 = _folder(tmp_path / "e", {"a": 1, "b": 1, "c": 1})
    with pytest.raises(VaqfError, match="--num-classes 3"):
        load_images(root2, in_chans=3, img_size=8, num_classes=2)


def test_split_is_stratified_and_seeded() -> None:
    d = load_images("digits", in_chans=1, img_size=8)
    a_train, a_val = d.split(0.2, seed=0)
    b_train, b_val = d.split(0.2, seed=0)
    np.testing.assert_array_equal(a_val.y, b_val.y)
    assert len(a_train) + len(a_val) == len(d)
    counts = np.bincount(a_val.y)
    assert counts.min() >= 35 and counts.max() <= 37  # about 20% of each class's ~180
    with pytest.raises(VaqfError, match="--val-fraction"):
        d.split(1.5)
