"""Small torch models shared by the adapter's tests (imported after ``pytest.importorskip("torch")``)."""
from __future__ import annotations

from collections.abc import Callable

import torch


class TinyAE(torch.nn.Module):
    """A 3x8x8 conv autoencoder small enough for many unit tests."""

    def __init__(self):
        super().__init__()
        self.enc = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, stride=2, padding=1), torch.nn.ReLU())
        self.dec = torch.nn.Sequential(torch.nn.ConvTranspose2d(8, 3, 4, stride=2, padding=1), torch.nn.Sigmoid())

    def forward(self, x):
        return self.dec(self.enc(x))


def seeded_mlp_ae() -> torch.nn.Module:
    """A float64 3x4x4 MLP autoencoder, seeded (``torch.manual_seed(0)``): the same weights in every process
    (the resume tests and the two ranks of ``lightning_ddp_job.py``)."""
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(48, 16), torch.nn.Tanh(),
                               torch.nn.Linear(16, 48), torch.nn.Unflatten(1, (3, 4, 4))).double()


def lightning_autoencoder(make_net: Callable[[], torch.nn.Module], lr: float = 1e-2):
    """A LightningModule training ``make_net()`` (built with the module, so a seeded builder seeds there) to
    reconstruct its input: ``training_step`` on a batch ``(x,)`` returns ``mse_loss(self(x), x)``; Adam at ``lr``.
    The network keeps its own dtype. Imports Lightning when called."""
    import lightning.pytorch as pl

    class LitAutoencoder(pl.LightningModule):
        def __init__(self):
            super().__init__()
            self.net = make_net()

        def forward(self, x):
            return self.net(x)

        def training_step(self, batch, batch_idx):
            (x,) = batch
            return torch.nn.functional.mse_loss(self(x), x)

        def configure_optimizers(self):
            return torch.optim.Adam(self.parameters(), lr=lr)

    return LitAutoencoder()
