"""Architectures of the built-in models.

``digits-mlp`` is shaped like LeNet-300-100 (Han et al. 2015) on 8x8 digits;
``digits-cnn`` is a small VGG-style conv net (conv-bn-relu blocks);
``digits-vgg`` has the lab VGG's shape, narrow, on the digits upscaled to 32x32;
``lab-vgg`` is the CIFAR-10 VGG of the MIT 6.5940 pruning lab (random weights
unless a checkpoint is given; its parameter names match the lab's, so the
lab's checkpoint loads with ``--weights``).
"""
from __future__ import annotations

from collections import OrderedDict

import torch
from torch import nn


class DigitsMLP(nn.Module):
    """64-300-100-10 multilayer perceptron (the LeNet-300-100 shape)."""

    def __init__(self, in_features: int = 64, hidden=(300, 100), num_classes: int = 10):
        super().__init__()
        self.flatten = nn.Flatten()
        self.fc1 = nn.Linear(in_features, hidden[0])
        self.fc2 = nn.Linear(hidden[0], hidden[1])
        self.fc3 = nn.Linear(hidden[1], num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.flatten(x)
        x = torch.relu(self.fc1(x))
        x = torch.relu(self.fc2(x))
        return self.fc3(x)


def _vgg_backbone(arch, in_channels: int) -> nn.Sequential:
    """conv-bn-relu blocks ('M' = 2x2 max-pool), named conv0, bn0, relu0, pool0, ..."""
    layers: list[tuple[str, nn.Module]] = []
    counts: dict[str, int] = {}

    def add(kind: str, module: nn.Module) -> None:
        layers.append((f"{kind}{counts.get(kind, 0)}", module))
        counts[kind] = counts.get(kind, 0) + 1

    for x in arch:
        if x == "M":
            add("pool", nn.MaxPool2d(2))
        else:
            add("conv", nn.Conv2d(in_channels, x, 3, padding=1, bias=False))
            add("bn", nn.BatchNorm2d(x))
            add("relu", nn.ReLU(inplace=True))
            in_channels = x
    return nn.Sequential(OrderedDict(layers))


class DigitsCNN(nn.Module):
    """Small VGG-style network for 1x8x8 digits: 4 convs, 2 pools, one linear classifier."""

    ARCH = (32, 32, "M", 64, 64, "M")

    def __init__(self, num_classes: int = 10):
        super().__init__()
        self.backbone = _vgg_backbone(self.ARCH, 1)
        self.classifier = nn.Linear(64 * 2 * 2, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.backbone(x)
        return self.classifier(torch.flatten(x, 1))


class LabVGG(nn.Module):
    """The VGG of the MIT 6.5940 pruning lab (CIFAR-10, 3x32x32 input)."""

    ARCH = (64, 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M")

    def __init__(self, num_classes: int = 10):
        super().__init__()
        self.backbone = _vgg_backbone(self.ARCH, 3)
        self.classifier = nn.Linear(512, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.backbone(x)  # N x 512 x 2 x 2
        x = x.mean([2, 3])
        return self.classifier(x)


class DigitsVGG(nn.Module):
    """The lab VGG's shape, narrow enough to train on the digits (upscaled to 32x32) in about a minute on 2 cores,
    and wide enough that compacting half the channels gives a measured speedup of about 0.8x the MAC ratio at
    batch 32 (at 8-64 channels it was 0.5x: small convolutions and max-pooling dominated; benchmarks/README.md).
    The 8x8 digits-cnn is bound by per-layer call overhead."""

    ARCH = (24, 48, "M", 96, 96, "M", 192, 192, "M", 192, 192, "M")

    def __init__(self, num_classes: int = 10):
        super().__init__()
        self.backbone = _vgg_backbone(self.ARCH, 1)
        self.classifier = nn.Linear([c for c in self.ARCH if c != "M"][-1], num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.backbone(x)  # N x C x 2 x 2
        return self.classifier(x.mean([2, 3]))
