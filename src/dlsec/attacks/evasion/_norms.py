"""Threat-model norms: each is a handful of small operations used by every attack.

* ``distance(delta)``: per-example norm of a batch of perturbations.
* ``project(delta, eps)``: the closest point of the eps-ball (per-example ``eps`` allowed).
* ``ascent(grad)``: the steepest-ascent direction of unit norm (sign for L-inf, normalised
  gradient for L2, sparse top-k sign for L1).
* ``random(shape, eps, gen)``: a random point of the ball, for random starts.
"""

from __future__ import annotations

import math
from typing import ClassVar

import torch

from dlsec.errors import UsageError

__all__ = ["Norm", "LInf", "L2", "L1", "get_norm", "NORMS"]

_TINY = 1e-12


def _flat(t: torch.Tensor) -> torch.Tensor:
    return t.reshape(t.shape[0], -1)


def _per_example(value: float | torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """``value`` as a tensor broadcastable against a batch ``like`` (shape ``(N, 1, ..., 1)``)."""
    t = torch.as_tensor(value, dtype=like.dtype, device=like.device)
    if t.ndim == 0:
        return t
    return t.reshape(-1, *([1] * (like.ndim - 1)))


def _uniform_rows(n: int, width: int, gen: torch.Generator, dtype: torch.dtype) -> torch.Tensor:
    """``(n, width)`` uniforms in (0, 1), drawn row after row from ``gen``.

    The CPU generator fills a tensor serially, so the rows of one ``(a + b, width)`` draw are
    those of an ``(a, width)`` draw followed by a ``(b, width)`` one: an attack that streams
    its examples in batches starts each from the point the whole set would have given it.
    """
    u = torch.rand((n, width), generator=gen, device=gen.device, dtype=dtype)
    tiny = torch.finfo(dtype).tiny
    return u.clamp(min=tiny, max=1.0 - torch.finfo(dtype).eps / 2)


class Norm:
    """An Lp threat model."""

    name: ClassVar[str]
    p: ClassVar[float]

    def distance(self, delta: torch.Tensor) -> torch.Tensor:
        return _flat(delta).norm(p=self.p, dim=1)

    def project(self, delta: torch.Tensor, eps: float | torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def ascent(self, grad: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def random(
        self,
        shape: torch.Size | tuple[int, ...],
        eps: float | torch.Tensor,
        gen: torch.Generator,
        *,
        device: torch.device,
        dtype: torch.dtype,
    ) -> torch.Tensor:
        raise NotImplementedError


class LInf(Norm):
    name = "linf"
    p = math.inf

    def project(self, delta: torch.Tensor, eps: float | torch.Tensor) -> torch.Tensor:
        e = _per_example(eps, delta)
        return torch.maximum(torch.minimum(delta, e), -e)

    def ascent(self, grad: torch.Tensor) -> torch.Tensor:
        return grad.sign()

    def random(
        self,
        shape: torch.Size | tuple[int, ...],
        eps: float | torch.Tensor,
        gen: torch.Generator,
        *,
        device: torch.device,
        dtype: torch.dtype,
    ) -> torch.Tensor:
        u = torch.rand(shape, generator=gen, device=gen.device, dtype=dtype).to(device)
        return (2 * u - 1) * _per_example(eps, u)


class L2(Norm):
    name = "l2"
    p = 2.0

    def project(self, delta: torch.Tensor, eps: float | torch.Tensor) -> torch.Tensor:
        norms = self.distance(delta).reshape(-1, *([1] * (delta.ndim - 1)))
        e = _per_example(eps, delta)
        factor = torch.clamp(e / (norms + _TINY), max=1.0)
        return delta * factor

    def ascent(self, grad: torch.Tensor) -> torch.Tensor:
        norms = self.distance(grad).reshape(-1, *([1] * (grad.ndim - 1)))
        return grad / (norms + _TINY)

    def random(
        self,
        shape: torch.Size | tuple[int, ...],
        eps: float | torch.Tensor,
        gen: torch.Generator,
        *,
        device: torch.device,
        dtype: torch.dtype,
    ) -> torch.Tensor:
        # Uniform in the ball: a Gaussian direction, radius eps * U^(1/d). Every draw of an
        # example comes from one row of uniforms, so a batch split in two draws the same points.
        d = math.prod(shape[1:])
        u = _uniform_rows(shape[0], d + 1, gen, dtype).to(device)
        g = torch.special.ndtri(u[:, :d]).reshape(shape)
        r = u[:, d] ** (1.0 / d)
        direction = self.ascent(g)
        return direction * r.reshape(-1, *([1] * (len(shape) - 1))) * _per_example(eps, g)


class L1(Norm):
    """L1 threat model; steepest ascent is sparse (the top-k coordinates), as in SLIDE."""

    name = "l1"
    p = 1.0

    def __init__(self, *, sparsity: float = 0.95) -> None:
        self.sparsity = sparsity

    def project(self, delta: torch.Tensor, eps: float | torch.Tensor) -> torch.Tensor:
        # Euclidean projection onto the L1 ball (Duchi et al. 2008), per example.
        flat = _flat(delta)
        e = torch.as_tensor(eps, dtype=delta.dtype, device=delta.device).reshape(-1)
        e = e.expand(flat.shape[0]) if e.numel() == 1 else e
        abs_flat = flat.abs()
        inside = abs_flat.sum(dim=1) <= e
        mu, _ = torch.sort(abs_flat, dim=1, descending=True)
        cumsum = mu.cumsum(dim=1)
        ks = torch.arange(1, flat.shape[1] + 1, device=delta.device, dtype=delta.dtype)
        cond = mu - (cumsum - e[:, None]) / ks > 0
        rho = (cond * ks).argmax(dim=1, keepdim=True)
        theta = (cumsum.gather(1, rho) - e[:, None]) / (rho + 1).to(delta.dtype)
        projected = flat.sign() * torch.clamp(abs_flat - theta.clamp(min=0), min=0)
        out = torch.where(inside[:, None], flat, projected)
        return out.reshape(delta.shape)

    def ascent(self, grad: torch.Tensor) -> torch.Tensor:
        flat = _flat(grad)
        k = max(1, int(round((1 - self.sparsity) * flat.shape[1])))
        top = flat.abs().topk(k, dim=1).indices
        out = torch.zeros_like(flat)
        out.scatter_(1, top, flat.gather(1, top).sign())
        return (out / k).reshape(grad.shape)

    def random(
        self,
        shape: torch.Size | tuple[int, ...],
        eps: float | torch.Tensor,
        gen: torch.Generator,
        *,
        device: torch.device,
        dtype: torch.dtype,
    ) -> torch.Tensor:
        # Uniform on the simplex scaled by a radius: Laplace direction, radius eps * U^(1/d).
        # One row of uniforms per example (exponential by inversion, a sign, the radius), so a
        # batch split in two draws the same points.
        d = math.prod(shape[1:])
        u = _uniform_rows(shape[0], 2 * d + 1, gen, dtype)
        e = -torch.log1p(-u[:, :d])
        signs = torch.where(u[:, d : 2 * d] < 0.5, -1.0, 1.0).to(dtype)
        direction = (e * signs).reshape(shape)
        direction = direction / _flat(direction).abs().sum(1).reshape(-1, *([1] * (len(shape) - 1)))
        r = u[:, 2 * d] ** (1.0 / d)
        out = direction * r.reshape(-1, *([1] * (len(shape) - 1)))
        return out.to(device) * _per_example(eps, out.to(device))


NORMS: dict[str, type[Norm]] = {"linf": LInf, "l2": L2, "l1": L1}


def get_norm(name: str) -> Norm:
    """The norm called ``name`` (``linf``, ``l2`` or ``l1``)."""
    key = name.lower().replace("-", "").replace("_", "")
    key = {"inf": "linf", "linfinity": "linf", "2": "l2", "1": "l1"}.get(key, key)
    if key not in NORMS:
        raise UsageError(f"unknown norm {name!r}; use linf, l2 or l1")
    return NORMS[key]()
