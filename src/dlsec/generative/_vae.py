"""A small variational auto-encoder on the 8x8 digits (Kingma and Welling, 2014).

The encoder (two strided convolutions) gives the mean and log-variance of a Gaussian posterior;
the decoder mirrors the DCGAN generator (a linear projection to 2x2, two transposed convolutions,
a sigmoid). The loss is the negative ELBO with a Bernoulli likelihood (binary cross-entropy
summed over pixels, the digits being grey levels in [0, 1]) plus the KL divergence to N(0, I).
``forward(z)`` decodes, so sampling works like the GAN's; ``reconstruct`` encodes and decodes
with the posterior mean, which is the regeneration attack on a watermark.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F


class VAE(nn.Module):
    """z -> (1, 8, 8) in [0, 1] by ``forward``; images -> posterior by ``encode``."""

    def __init__(self, latent_dim: int, width: int) -> None:
        super().__init__()
        self.width = width
        self.encoder = nn.Sequential(
            nn.Conv2d(1, width, 4, stride=2, padding=1),  # 8 -> 4
            nn.LeakyReLU(0.2),
            nn.Conv2d(width, 2 * width, 4, stride=2, padding=1),  # 4 -> 2
            nn.LeakyReLU(0.2),
            nn.Flatten(),
            nn.Linear(2 * width * 4, 2 * latent_dim),
        )
        self.project = nn.Sequential(nn.Linear(latent_dim, 2 * width * 4), nn.ReLU())
        self.up = nn.Sequential(
            nn.ConvTranspose2d(2 * width, width, 4, stride=2, padding=1),  # 2 -> 4
            nn.ReLU(),
            nn.ConvTranspose2d(width, 1, 4, stride=2, padding=1),  # 4 -> 8
        )

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The posterior's mean and log-variance for images of shape (N, 1, 8, 8)."""
        mu, logvar = self.encoder(x).chunk(2, dim=1)
        return mu, logvar

    def decode_logits(self, z: torch.Tensor) -> torch.Tensor:
        return self.up(self.project(z).view(-1, 2 * self.width, 2, 2))

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.decode_logits(z))

    def reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        """Encode to the posterior mean and decode: the image as the VAE regenerates it."""
        mu, _ = self.encode(x)
        return self(mu)


def train_vae(
    x: torch.Tensor,
    *,
    latent_dim: int,
    width: int,
    epochs: int,
    batch_size: int,
    lr: float,
    seed: int,
) -> VAE:
    """Train a :class:`VAE` on ``x`` (N, 1, 8, 8) from ``seed``; deterministic on one machine."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        vae = VAE(latent_dim, width)
        opt = torch.optim.Adam(vae.parameters(), lr=lr)
        order = torch.Generator().manual_seed(seed + 1)
        noise = torch.Generator().manual_seed(seed + 2)
        vae.train()
        for _ in range(epochs):
            perm = torch.randperm(len(x), generator=order)
            for start in range(0, len(x) - batch_size + 1, batch_size):
                batch = x[perm[start : start + batch_size]]
                mu, logvar = vae.encode(batch)
                z = mu + torch.exp(0.5 * logvar) * torch.randn(mu.shape, generator=noise)
                recon = F.binary_cross_entropy_with_logits(vae.decode_logits(z), batch, reduction="sum")
                kl = -0.5 * torch.sum(1 + logvar - mu.pow(2) - logvar.exp())
                loss = (recon + kl) / len(batch)
                opt.zero_grad()
                loss.backward()
                opt.step()
    vae.eval()
    return vae
