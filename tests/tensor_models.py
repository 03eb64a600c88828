"""Small user models for ``tensors:PATH`` tests (``--arch tests.tensor_models:Class --trust``): a 1-D convolutional
classifier of signals, a tabular MLP classifier and a regression head, each constructible without arguments."""
from __future__ import annotations

import torch
from torch import nn

SIGNAL = 64          # samples per signal (1 channel)
FEATURES = 12        # columns of the tabular data
TARGETS = 2          # outputs of the regression head


class Conv1dNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(nn.Conv1d(1, 8, 5, padding=2), nn.BatchNorm1d(8), nn.ReLU(), nn.MaxPool1d(2),
                                      nn.Conv1d(8, 16, 5, padding=2), nn.ReLU(), nn.AdaptiveAvgPool1d(1))
        self.head = nn.Linear(16, 3)

    def forward(self, x):
        return self.head(self.features(x).flatten(1))


class TabularMLP(nn.Module):
    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(FEATURES, 32), nn.ReLU(), nn.Linear(32, 32), nn.ReLU(), nn.Linear(32, 4))

    def forward(self, x):
        return self.net(x)


class RegressionHead(nn.Module):
    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(FEATURES, 32), nn.Tanh(), nn.Linear(32, TARGETS))

    def forward(self, x):
        return self.net(x)


def signals(n: int, seed: int = 0):
    """Sine waves of three frequencies plus noise, labelled by frequency: x N x 1 x 64 float32, y N int64."""
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, 3, (n,), generator=g)
    t = torch.arange(SIGNAL, dtype=torch.float32)
    phase = torch.rand(n, 1, generator=g) * 6.28
    x = torch.sin(t[None, :] * (0.2 + 0.35 * y[:, None].float()) + phase) + 0.3 * torch.randn(n, SIGNAL, generator=g)
    return x[:, None, :].contiguous(), y


def tabular(n: int, seed: int = 0):
    """x N x 12 float32; y: class = argmax of a fixed linear map (4 classes); r: a smooth 2-vector target."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, FEATURES, generator=g)
    w = torch.randn(FEATURES, 4, generator=torch.Generator().manual_seed(99))
    y = (x @ w).argmax(1)
    r = torch.stack([torch.sin(x[:, 0]) + 0.5 * x[:, 1], x[:, 2] * x[:, 3] * 0.5], 1)
    return x, y, r


def train(model: nn.Module, x: torch.Tensor, y: torch.Tensor, steps: int = 150, lr: float = 0.01) -> nn.Module:
    """A few full-batch Adam steps (cross-entropy for integer y, mean squared error for float y)."""
    torch.manual_seed(0)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    loss_fn = nn.MSELoss() if y.is_floating_point() else nn.CrossEntropyLoss()
    model.train()
    for _ in range(steps):
        opt.zero_grad()
        loss_fn(model(x), y).backward()
        opt.step()
    return model.eval()
