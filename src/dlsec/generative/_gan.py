"""Built-in generators: a small DCGAN and a small VAE on the 8x8 digits, trained on first use, cached.

The generators live here rather than in :mod:`dlsec.zoo`: the zoo sits below this package and
its entries are classifiers (``load_zoo_model`` returns a :class:`~dlsec.core.WhiteBoxModel`), so
registering a generator there would make the zoo import ``generative``, an upward import. This
package owns its generators the way the zoo owns its classifiers: a registry of entries, each
fully determined by its fields, trained deterministically on first use and cached under
``<home>/cache/generative/NAME/`` as ``model.safetensors`` plus ``card.json``. A cache entry is
trusted only if its card names the current recipe and the weights' SHA-256 matches the card;
otherwise it is retrained.

The GAN follows Radford et al. (2016), scaled to 8x8: transposed convolutions with batch norm
and ReLU in the generator, strided convolutions with LeakyReLU in the discriminator, Adam at
``betas = (0.5, 0.999)`` (a larger step, 5e-4, so that 15 epochs train it in about ten seconds on
one CPU thread), the non-saturating loss. The VAE (``zoo-vae``, :mod:`._vae`) decodes with the
same layers; its encoder is what the regeneration attack on watermarks runs through.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from dlsec.errors import ModelLoadError, UsageError

__all__ = [
    "GENERATORS",
    "Generator",
    "GeneratorEntry",
    "generator_path",
    "load_generator",
    "register_generator",
    "train_generator",
]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class GeneratorEntry:
    """A built-in generator: how to train it, fully determined by these fields."""

    name: str
    version: str
    kind: str = "gan"
    dataset: str = "builtin:digits"
    latent_dim: int = 32
    width: int = 16
    epochs: int = 15
    batch_size: int = 64
    lr: float = 5e-4
    seed: int = 0
    description: str = ""

    @property
    def recipe_hash(self) -> str:
        """SHA-256 of everything that determines the trained weights."""
        from dlsec.generative._cache import recipe_hash

        fields = asdict(self)
        fields.pop("description")
        return recipe_hash(fields)


GENERATORS: dict[str, GeneratorEntry] = {}
_KINDS = ("gan", "vae")


def register_generator(entry: GeneratorEntry) -> GeneratorEntry:
    """Add a built-in generator; a duplicate name raises ``UsageError``."""
    if entry.name in GENERATORS:
        raise UsageError(f"generator {entry.name!r} is already registered")
    if entry.kind not in _KINDS:
        kinds = ", ".join(_KINDS)
        raise UsageError(f"generator {entry.name!r}: unknown kind {entry.kind!r} (one of {kinds})")
    GENERATORS[entry.name] = entry
    return entry


register_generator(
    GeneratorEntry(
        name="zoo-gan",
        version="1",
        description="DCGAN on the 8x8 digits (builtin:digits), values in [0, 1]",
    )
)
register_generator(
    GeneratorEntry(
        name="zoo-vae",
        version="1",
        kind="vae",
        latent_dim=16,
        epochs=40,
        lr=2e-3,
        description="VAE on the 8x8 digits (builtin:digits), values in [0, 1]; reconstructs too",
    )
)


class _G(nn.Module):
    """z -> (1, 8, 8) in [0, 1]."""

    def __init__(self, latent_dim: int, width: int) -> None:
        super().__init__()
        self.width = width
        self.project = nn.Sequential(
            nn.Linear(latent_dim, 2 * width * 2 * 2), nn.BatchNorm1d(2 * width * 4), nn.ReLU()
        )
        self.up = nn.Sequential(
            nn.ConvTranspose2d(2 * width, width, 4, stride=2, padding=1),  # 2 -> 4
            nn.BatchNorm2d(width),
            nn.ReLU(),
            nn.ConvTranspose2d(width, 1, 4, stride=2, padding=1),  # 4 -> 8
            nn.Sigmoid(),
        )

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        h = self.project(z).view(-1, 2 * self.width, 2, 2)
        return self.up(h)


class _D(nn.Module):
    """(1, 8, 8) -> a real/fake logit."""

    def __init__(self, width: int) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(1, width, 4, stride=2, padding=1),  # 8 -> 4
            nn.LeakyReLU(0.2),
            nn.Conv2d(width, 2 * width, 4, stride=2, padding=1),  # 4 -> 2
            nn.BatchNorm2d(2 * width),
            nn.LeakyReLU(0.2),
            nn.Flatten(),
            nn.Linear(2 * width * 4, 1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x).squeeze(1)


@dataclass(frozen=True)
class Generator:
    """A trained generator and what provenance records about it.

    Example:
        >>> gen = load_generator("zoo-gan")          # doctest: +SKIP
        >>> gen.sample(4, seed=0).shape              # doctest: +SKIP
        (4, 8, 8)
    """

    name: str
    version: str
    weights_sha256: str
    latent_dim: int
    module: nn.Module

    def sample(self, n: int, *, seed: int = 0) -> np.ndarray:
        """``n`` images of shape (8, 8), float32 in [0, 1], from latents drawn with ``seed``."""
        if n < 1:
            raise UsageError(f"the number of samples must be at least 1, not {n}")
        g = torch.Generator().manual_seed(seed)
        z = torch.randn(n, self.latent_dim, generator=g)
        self.module.eval()
        with torch.no_grad():
            x = self.module(z)
        return x[:, 0].numpy().astype(np.float32)

    def reconstruct(self, images: np.ndarray) -> np.ndarray:
        """Encode and decode (N, 8, 8) images in [0, 1]: the regeneration a VAE makes of them.

        Raises:
            UsageError: the generator has no encoder (a GAN).
        """
        encode = getattr(self.module, "reconstruct", None)
        if encode is None:
            raise UsageError(f"generator {self.name} has no encoder; regenerate with a VAE (zoo-vae)")
        x = torch.from_numpy(np.asarray(images, dtype=np.float32)).unsqueeze(1)
        if tuple(x.shape[1:]) != (1, 8, 8):
            raise UsageError(f"{self.name} reconstructs (N, 8, 8) images, not {tuple(images.shape)}")
        self.module.eval()
        with torch.no_grad():
            out = encode(x)
        return np.asarray(out[:, 0].numpy(), dtype=np.float32)


def _entry(name: str) -> GeneratorEntry:
    if name not in GENERATORS:
        raise ModelLoadError(f"unknown generator {name!r}; choose one of: " + ", ".join(GENERATORS))
    return GENERATORS[name]


def generator_path(name: str, *, home: str | Path | None = None) -> Path:
    """The cache folder of built-in generator ``name``."""
    from dlsec.generative._cache import cache_folder

    return cache_folder(_entry(name).name, home)


def train_generator(entry: GeneratorEntry) -> nn.Module:
    """Train ``entry``'s generator from its seed (deterministic on one machine) and return it."""
    from dlsec.core.data import load_dataset

    data = load_dataset(entry.dataset)
    x = torch.from_numpy(np.asarray(data.x, dtype=np.float32))
    if tuple(x.shape[1:]) != (1, 8, 8):
        raise UsageError(f"{entry.dataset}: the GAN needs (1, 8, 8) images, not {tuple(x.shape[1:])}")
    from dlsec.generative._cache import one_thread

    if entry.kind == "vae":
        from dlsec.generative._vae import train_vae

        return one_thread(
            lambda: train_vae(
                x,
                latent_dim=entry.latent_dim,
                width=entry.width,
                epochs=entry.epochs,
                batch_size=entry.batch_size,
                lr=entry.lr,
                seed=entry.seed,
            )
        )
    return one_thread(lambda: _train(entry, x))


def _build(entry: GeneratorEntry) -> nn.Module:
    """An untrained module of ``entry``'s architecture."""
    if entry.kind == "vae":
        from dlsec.generative._vae import VAE

        return VAE(entry.latent_dim, entry.width)
    return _G(entry.latent_dim, entry.width)


def _train(entry: GeneratorEntry, x: torch.Tensor) -> nn.Module:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(entry.seed)
        gen, disc = _G(entry.latent_dim, entry.width), _D(entry.width)
        opt_g = torch.optim.Adam(gen.parameters(), lr=entry.lr, betas=(0.5, 0.999))
        opt_d = torch.optim.Adam(disc.parameters(), lr=entry.lr, betas=(0.5, 0.999))
        bce = nn.BCEWithLogitsLoss()
        order = torch.Generator().manual_seed(entry.seed + 1)
        noise = torch.Generator().manual_seed(entry.seed + 2)
        for _ in range(entry.epochs):
            perm = torch.randperm(len(x), generator=order)
            for start in range(0, len(x) - entry.batch_size + 1, entry.batch_size):
                real = x[perm[start : start + entry.batch_size]]
                z = torch.randn(len(real), entry.latent_dim, generator=noise)
                fake = gen(z)
                ones, zeros = torch.ones(len(real)), torch.zeros(len(real))
                opt_d.zero_grad()
                loss_d = bce(disc(real), ones) + bce(disc(fake.detach()), zeros)
                loss_d.backward()
                opt_d.step()
                opt_g.zero_grad()
                loss_g = bce(disc(fake), ones)  # non-saturating generator loss
                loss_g.backward()
                opt_g.step()
    gen.eval()
    return gen


def load_generator(name: str, *, home: str | Path | None = None) -> Generator:
    """Load built-in generator ``name``, training and caching it on first use.

    The returned :attr:`Generator.weights_sha256` is the SHA-256 of the very file loaded (read
    once, hashed, then parsed from the same bytes), so provenance names the weights that ran.

    Example:
        >>> gen = load_generator("zoo-gan")          # doctest: +SKIP
        >>> len(gen.weights_sha256)                  # doctest: +SKIP
        64
    """
    from dlsec.generative._cache import Cached, load_or_train

    entry = _entry(name)
    spec = Cached(entry.name, entry.version, entry.recipe_hash, asdict(entry))
    module, digest, _ = load_or_train(
        spec,
        generator_path(name, home=home),
        train=lambda: (train_generator(entry), None),
        build=lambda: _build(entry),
    )
    return Generator(
        name=entry.name,
        version=entry.version,
        weights_sha256=digest,
        latent_dim=entry.latent_dim,
        module=module,
    )
