"""Seeding: every random choice in dlsec comes from a recorded seed."""

from __future__ import annotations

import random
from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np
import torch

__all__ = ["seed_everything", "seeded_draws", "torch_generator"]


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (all devices) with ``seed``."""
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)


def torch_generator(seed: int, device: torch.device | str = "cpu") -> torch.Generator:
    """A private torch generator seeded with ``seed``, leaving the global one alone."""
    g = torch.Generator(device=device)
    g.manual_seed(seed)
    return g


@contextmanager
def seeded_draws(seed: int, device: torch.device) -> Iterator[None]:
    """Seed the global generators a model's own randomness draws from; restore them afterwards.

    A randomised model cannot be handed the attack's generator, so its draws come from torch's
    global ones: seeding them makes a run reproducible, and forking them leaves the caller's
    state as it was.
    """
    cuda = device.type == "cuda"
    with torch.random.fork_rng(devices=[device] if cuda else []):
        torch.default_generator.manual_seed(seed)
        if cuda:
            with torch.cuda.device(device):
                torch.cuda.manual_seed(seed)
        yield
