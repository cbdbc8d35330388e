"""Small torch models shared by the adapter's tests (imported after ``pytest.importorskip("torch")``)."""
from __future__ import annotations

import torch


class TinyAE(torch.nn.Module):
    """A 3x8x8 conv autoencoder small enough for many unit tests."""

    def __init__(self):
        super().__init__()
        self.enc = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, stride=2, padding=1), torch.nn.ReLU())
        self.dec = torch.nn.Sequential(torch.nn.ConvTranspose2d(8, 3, 4, stride=2, padding=1), torch.nn.Sigmoid())

    def forward(self, x):
        return self.dec(self.enc(x))
