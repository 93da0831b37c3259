"""Built-in generators: a small DCGAN on the 8x8 digits, trained on first use and cached.

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
one CPU thread), the non-saturating loss.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from dlsec.core.home import cache_dir
from dlsec.errors import ModelLoadError, UsageError
from dlsec.fsutil import atomic_write_text, atomic_write_with, sha256_file

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

CARD = "card.json"
WEIGHTS = "model.safetensors"
_CACHE_FORMAT = 1


@dataclass(frozen=True)
class GeneratorEntry:
    """A built-in generator: how to train it, fully determined by these fields."""

    name: str
    version: str
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
        fields = asdict(self)
        fields.pop("description")
        fields["cache_format"] = _CACHE_FORMAT
        return hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()


GENERATORS: dict[str, GeneratorEntry] = {}


def register_generator(entry: GeneratorEntry) -> GeneratorEntry:
    """Add a built-in generator; a duplicate name raises ``UsageError``."""
    if entry.name in GENERATORS:
        raise UsageError(f"generator {entry.name!r} is already registered")
    GENERATORS[entry.name] = entry
    return entry


register_generator(
    GeneratorEntry(
        name="zoo-gan",
        version="1",
        description="DCGAN on the 8x8 digits (builtin:digits), values in [0, 1]",
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


def _entry(name: str) -> GeneratorEntry:
    if name not in GENERATORS:
        raise ModelLoadError(f"unknown generator {name!r}; choose one of: " + ", ".join(GENERATORS))
    return GENERATORS[name]


def generator_path(name: str, *, home: str | Path | None = None) -> Path:
    """The cache folder of built-in generator ``name``."""
    return cache_dir(home) / "generative" / _entry(name).name


def train_generator(entry: GeneratorEntry) -> nn.Module:
    """Train ``entry``'s generator from its seed (deterministic on one machine) and return it."""
    from dlsec.core.data import load_dataset

    data = load_dataset(entry.dataset)
    x = torch.from_numpy(np.asarray(data.x, dtype=np.float32))
    if tuple(x.shape[1:]) != (1, 8, 8):
        raise UsageError(f"{entry.dataset}: the GAN needs (1, 8, 8) images, not {tuple(x.shape[1:])}")
    threads = torch.get_num_threads()
    # One thread: tiny layers run faster without thread hand-offs, and the sums are ordered
    # the same on every run.
    torch.set_num_threads(1)
    try:
        return _train(entry, x)
    finally:
        torch.set_num_threads(threads)


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


def _save(entry: GeneratorEntry, module: nn.Module, folder: Path) -> str:
    from safetensors.torch import save_file

    state = {k: v.detach().cpu().contiguous() for k, v in module.state_dict().items()}
    meta = {"generator": entry.name, "version": entry.version, "recipe_hash": entry.recipe_hash}
    metadata = {"dlsec": json.dumps(meta, sort_keys=True, separators=(",", ":"))}
    weights = folder / WEIGHTS
    atomic_write_with(weights, lambda tmp: save_file(state, str(tmp), metadata=metadata))
    digest = sha256_file(weights)
    card = {
        "name": entry.name,
        "version": entry.version,
        "recipe_hash": entry.recipe_hash,
        "recipe": asdict(entry),
        "weights_sha256": digest,
        "trained_at": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    atomic_write_text(folder / CARD, json.dumps(card, indent=2, sort_keys=True) + "\n")
    return digest


def _cached_digest(entry: GeneratorEntry, folder: Path) -> str | None:
    weights, card_path = folder / WEIGHTS, folder / CARD
    if not weights.is_file() or not card_path.is_file():
        return None
    try:
        card: dict[str, Any] = json.loads(card_path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        log.warning("generator %s: unreadable cache card; retraining", entry.name)
        return None
    if card.get("recipe_hash") != entry.recipe_hash:
        log.warning("generator %s: cache made by another recipe; retraining", entry.name)
        return None
    digest = sha256_file(weights)
    if card.get("weights_sha256") != digest:
        log.warning(
            "generator %s: cached weights do not match their recorded SHA-256; retraining", entry.name
        )
        return None
    return digest


def load_generator(name: str, *, home: str | Path | None = None) -> Generator:
    """Load built-in generator ``name``, training and caching it on first use.

    The returned :attr:`Generator.weights_sha256` is the SHA-256 of the very file loaded (read
    once, hashed, then parsed from the same bytes), so provenance names the weights that ran.

    Example:
        >>> gen = load_generator("zoo-gan")          # doctest: +SKIP
        >>> len(gen.weights_sha256)                  # doctest: +SKIP
        64
    """
    from safetensors.torch import load as load_safetensors

    entry = _entry(name)
    folder = generator_path(name, home=home)
    if _cached_digest(entry, folder) is None:
        log.info("generator %s: training (first use)", entry.name)
        _save(entry, train_generator(entry), folder)
    raw = (folder / WEIGHTS).read_bytes()
    digest = hashlib.sha256(raw).hexdigest()
    card = json.loads((folder / CARD).read_text(encoding="utf-8"))
    if card.get("weights_sha256") != digest:
        raise ModelLoadError(f"generator {name}: the weights changed while loading; run again")
    module = _G(entry.latent_dim, entry.width)
    try:
        module.load_state_dict(load_safetensors(raw))
    except (RuntimeError, ValueError) as exc:
        raise ModelLoadError(f"generator {name}: cached weights do not fit the architecture ({exc})") from exc
    module.eval()
    return Generator(
        name=entry.name,
        version=entry.version,
        weights_sha256=digest,
        latent_dim=entry.latent_dim,
        module=module,
    )
