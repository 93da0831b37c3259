"""Seeding: every random choice in dlsec comes from a recorded seed."""

from __future__ import annotations

import random

import numpy as np
import torch

__all__ = ["seed_everything", "torch_generator"]


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
