"""The scratch CNN: a 2-conv-layer network trained from nothing, the floor of the results (docs/ARCHITECTURE.md §11)."""

from __future__ import annotations

import torch
from torch import nn


class ScratchCNN(nn.Module):
    """conv(32)-BN-ReLU-pool, conv(64)-BN-ReLU-pool, dropout, FC(128), FC(classes).

    The input size is fixed at construction (the flatten width depends on it), which matches
    the exported ONNX model: dynamic batch, fixed H x W from the model card.
    """

    def __init__(self, in_chans: int, num_classes: int, size: tuple[int, int], *, width: int = 16,
                 hidden: int = 128, drop: float = 0.25) -> None:
        super().__init__()
        h, w = size
        self.features = nn.Sequential(
            nn.Conv2d(in_chans, width, 3, padding=1, bias=False), nn.BatchNorm2d(width), nn.ReLU(inplace=True),
            nn.MaxPool2d(2),
            nn.Conv2d(width, 2 * width, 3, padding=1, bias=False), nn.BatchNorm2d(2 * width), nn.ReLU(inplace=True),
            nn.MaxPool2d(2),
        )
        self.head = nn.Sequential(
            nn.Flatten(), nn.Dropout(drop), nn.Linear(2 * width * (h // 4) * (w // 4), hidden), nn.ReLU(inplace=True),
            nn.Dropout(drop), nn.Linear(hidden, num_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))

    def get_classifier(self) -> nn.Module:
        return self.head[-1]
