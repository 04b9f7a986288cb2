"""CIFAR-size CNNs (and small variants for 8x8 / 28x28 digits) built from plain PyTorch modules.

Only ``nn.Conv2d`` (no bias, followed by ``nn.BatchNorm2d``), ``nn.ReLU``, residual additions, ``nn.MaxPool2d``,
``nn.AdaptiveAvgPool2d(1)``, ``nn.Flatten`` and ``nn.Linear`` are used, so ``torch.onnx.export`` (TorchScript
exporter, opset 17) writes Conv (BatchNormalization folded in eval mode), Relu, Add, MaxPool,
GlobalAveragePool, Flatten and Gemm, which is what vaqf's importer lifts.

- :func:`resnet20`: He et al.'s CIFAR ResNet (3 stages x 3 basic blocks, widths 16/32/64).
- :func:`resnet18`: the CIFAR variant of ResNet-18 (3x3 stem with stride 1, no max-pool; 4 stages x 2 blocks,
  widths 64/128/256/512), as used by Structure-LTH.
- :func:`vgg`: VGG-style networks from a configuration (``"vgg11"``, ``"vgg16"``, or a list of widths and
  ``"M"`` for 2x2 max-pools), with a global-average-pool classifier.
- :func:`small_resnet` and :func:`small_vgg`: the same shapes at digit-image scale (one input channel).

Shortcuts that change width or resolution are 1x1 convolutions with BatchNorm (option B of the ResNet paper),
so every convolution, including the shortcut ones, is a prunable weight matrix.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

VGG_CONFIGS: dict[str, list[int | str]] = {
    "vgg11": [64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"],
    "vgg13": [64, 64, "M", 128, 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"],
    "vgg16": [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"],
}


def conv_bn(in_channels: int, out_channels: int, kernel_size: int = 3, stride: int = 1) -> list[nn.Module]:
    """A bias-free convolution ("same" padding) and its BatchNorm."""
    return [nn.Conv2d(in_channels, out_channels, kernel_size, stride=stride, padding=kernel_size // 2, bias=False),
            nn.BatchNorm2d(out_channels)]


class BasicBlock(nn.Module):
    """Two 3x3 conv-BN layers with a residual addition; a 1x1 conv-BN shortcut when the shape changes."""

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1, self.bn1 = conv_bn(in_channels, out_channels, 3, stride)
        self.conv2, self.bn2 = conv_bn(out_channels, out_channels, 3, 1)
        self.relu1 = nn.ReLU()
        self.relu2 = nn.ReLU()
        self.shortcut: nn.Module
        if stride != 1 or in_channels != out_channels:
            self.shortcut = nn.Sequential(*conv_bn(in_channels, out_channels, 1, stride))
        else:
            self.shortcut = nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu1(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu2(out + self.shortcut(x))


class ResNet(nn.Module):
    """A CIFAR-style ResNet: 3x3 stem (stride 1, no max-pool), stages of basic blocks, global average pool, linear.

    The first stage keeps the resolution; every later stage halves it in its first block.
    """

    def __init__(self, blocks: Sequence[int], widths: Sequence[int], num_classes: int = 10,
                 in_channels: int = 3, stem_width: int | None = None) -> None:
        super().__init__()
        if len(blocks) != len(widths) or not blocks:
            raise ValueError(f"blocks {list(blocks)} and widths {list(widths)} must be non-empty and of equal length")
        stem = widths[0] if stem_width is None else stem_width
        self.conv1, self.bn1 = conv_bn(in_channels, stem, 3, 1)
        self.relu = nn.ReLU()
        stages: list[nn.Module] = []
        width = stem
        for i, (n, w) in enumerate(zip(blocks, widths, strict=True)):
            layers: list[nn.Module] = []
            for j in range(n):
                layers.append(BasicBlock(width, w, stride=2 if (i > 0 and j == 0) else 1))
                width = w
            stages.append(nn.Sequential(*layers))
        self.layers = nn.Sequential(*stages)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten()
        self.fc = nn.Linear(width, num_classes)
        init_weights(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu(self.bn1(self.conv1(x)))
        x = self.layers(x)
        return self.fc(self.flatten(self.pool(x)))


class VGG(nn.Module):
    """A VGG-style network: conv-BN-ReLU layers and 2x2 max-pools from ``config``, global average pool, linear."""

    def __init__(self, config: Sequence[int | str], num_classes: int = 10, in_channels: int = 3) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        width = in_channels
        for item in config:
            if item == "M":
                layers.append(nn.MaxPool2d(2, 2))
            elif isinstance(item, int) and item > 0:
                layers += [*conv_bn(width, item, 3, 1), nn.ReLU()]
                width = item
            else:
                raise ValueError(f"VGG config entries are positive widths or 'M', got {item!r}")
        if width == in_channels:
            raise ValueError("a VGG config needs at least one convolution")
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten()
        self.classifier = nn.Linear(width, num_classes)
        init_weights(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.flatten(self.pool(self.features(x))))


def init_weights(model: nn.Module) -> None:
    """Kaiming-normal convolutions (fan-out, as torchvision's ResNets), unit BatchNorm, small linear layers."""
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, 0.0, 0.01)
            nn.init.zeros_(m.bias)


def resnet20(num_classes: int = 10, in_channels: int = 3, width: int = 16) -> ResNet:
    """ResNet-20 for 32x32 images (0.27 M parameters at ``width=16``)."""
    return ResNet([3, 3, 3], [width, 2 * width, 4 * width], num_classes, in_channels)


def resnet18(num_classes: int = 10, in_channels: int = 3, width: int = 64) -> ResNet:
    """ResNet-18, CIFAR variant (3x3 stem, no max-pool; 11.2 M parameters at ``width=64``)."""
    return ResNet([2, 2, 2, 2], [width, 2 * width, 4 * width, 8 * width], num_classes, in_channels)


def vgg(config: str | Sequence[int | str] = "vgg16", num_classes: int = 10, in_channels: int = 3,
        width_multiplier: float = 1.0) -> VGG:
    """A VGG-style network; ``width_multiplier`` scales every width (at least 1 channel each)."""
    if isinstance(config, str):
        if config not in VGG_CONFIGS:
            raise ValueError(f"unknown VGG config {config!r}; known: {sorted(VGG_CONFIGS)} or a list")
        config = VGG_CONFIGS[config]
    scaled = [c if c == "M" else max(1, int(round(int(c) * width_multiplier))) for c in config]
    return VGG(scaled, num_classes, in_channels)


def small_resnet(num_classes: int = 10, in_channels: int = 1, widths: Sequence[int] = (16, 32, 64),
                 blocks: Sequence[int] = (1, 1, 1)) -> ResNet:
    """A ResNet for digit images (8x8 -> 2x2 or 28x28 -> 7x7 after its stride-2 stages)."""
    return ResNet(list(blocks), list(widths), num_classes, in_channels)


def small_vgg(num_classes: int = 10, in_channels: int = 1,
              config: Sequence[int | str] = (16, "M", 32, 32, "M", 64, 64)) -> VGG:
    """A VGG-style network for digit images (two max-pools: 8x8 -> 2x2 or 28x28 -> 7x7; 5.4 M MACs at 28x28)."""
    return VGG(list(config), num_classes, in_channels)


def build_cnn(name: str, num_classes: int = 10, in_channels: int = 3) -> nn.Module:
    """A network by name: ``resnet20``, ``resnet18``, ``vgg11``/``vgg13``/``vgg16``, ``small_resnet``,
    ``small_vgg``."""
    if name == "resnet20":
        return resnet20(num_classes, in_channels)
    if name == "resnet18":
        return resnet18(num_classes, in_channels)
    if name in VGG_CONFIGS:
        return vgg(name, num_classes, in_channels)
    if name == "small_resnet":
        return small_resnet(num_classes, in_channels)
    if name == "small_vgg":
        return small_vgg(num_classes, in_channels)
    raise ValueError(f"unknown CNN {name!r}; known: resnet20, resnet18, {', '.join(VGG_CONFIGS)}, small_resnet, "
                     "small_vgg")
