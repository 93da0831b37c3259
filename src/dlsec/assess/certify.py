"""Certified robustness by randomised smoothing (Cohen, Rosenfeld and Kolter, ICML 2019).

The smoothed classifier ``g(x) = argmax_c P(f(x + e) = c)``, ``e ~ N(0, sigma^2 I)``, is robust in
L2 around ``x`` within radius ``sigma * Phi^-1(p_A)``, where ``p_A`` lower-bounds the top class's
probability. :meth:`RandomizedSmoothing.certify` follows the paper's CERTIFY (selection with
``n0`` samples, estimation with ``n``, a one-sided Clopper-Pearson bound at level ``alpha``,
abstaining when the bound is below 1/2); :meth:`RandomizedSmoothing.predict` is its PREDICT
(a two-sided binomial test between the top two classes, abstaining when not significant).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from scipy.stats import beta, binomtest, norm

from dlsec.core.model import Model
from dlsec.core.seeding import torch_generator
from dlsec.errors import UsageError

__all__ = ["ABSTAIN", "Certificate", "RandomizedSmoothing", "certified_accuracy", "clopper_pearson_lower"]

ABSTAIN = -1


def clopper_pearson_lower(successes: int, trials: int, alpha: float) -> float:
    """One-sided ``1 - alpha`` Clopper-Pearson lower confidence bound on a binomial proportion."""
    if trials < 1 or not 0 <= successes <= trials:
        raise UsageError(f"need 0 <= successes <= trials and trials >= 1, got {successes}/{trials}")
    if successes == 0:
        return 0.0
    return float(beta.ppf(alpha, successes, trials - successes + 1))


@dataclass(frozen=True)
class Certificate:
    """The smoothed prediction for each example and its certified L2 radius (0 when abstaining)."""

    prediction: np.ndarray
    radius: np.ndarray
    p_lower: np.ndarray


class RandomizedSmoothing:
    """A Gaussian-smoothed classifier built on a base model.

    Args:
        sigma: noise standard deviation (input space).
        n0: selection samples (CERTIFY) per example.
        n: estimation samples per example.
        alpha: failure probability of the certificate and of the prediction test.
        batch_size: noisy samples evaluated at once.
        seed: seeds the noise.

    Example:
        >>> smoothed = RandomizedSmoothing(sigma=0.25, n0=100, n=1000, alpha=0.001)
        >>> cert = smoothed.certify(model, x)              # doctest: +SKIP
        >>> cert.radius[:3]                                # doctest: +SKIP
        array([0.41, 0.  , 0.93])
    """

    def __init__(
        self,
        *,
        sigma: float,
        n0: int = 100,
        n: int = 1000,
        alpha: float = 0.001,
        batch_size: int = 1000,
        seed: int = 0,
    ) -> None:
        if not sigma > 0:
            raise UsageError(f"sigma must be positive, got {sigma}")
        if n0 < 1 or n < 1:
            raise UsageError("n0 and n must be at least 1")
        if not 0 < alpha < 0.5:
            raise UsageError(f"alpha must lie in (0, 0.5), got {alpha}")
        self.sigma = sigma
        self.n0 = n0
        self.n = n
        self.alpha = alpha
        self.batch_size = batch_size
        self.seed = seed

    def _counts(self, model: Model, x: torch.Tensor, num: int, gen: torch.Generator) -> np.ndarray:
        """Class counts of the base classifier on ``num`` noisy copies of one example.

        Only predicted labels are used, so any access level works (noisy inputs may leave the
        input bounds, as in the paper; they are not clipped).
        """
        counts = np.zeros(model.spec.num_classes, dtype=np.int64)
        remaining = num
        with torch.no_grad():
            while remaining > 0:
                b = min(self.batch_size, remaining)
                noise = torch.randn((b, *x.shape), generator=gen) * self.sigma
                pred = model.predict(x.cpu()[None] + noise).numpy()
                counts += np.bincount(pred, minlength=model.spec.num_classes)
                remaining -= b
        return counts

    def certify(
        self,
        model: Model,
        x: torch.Tensor,
        progress: Callable[[int, int, dict[str, float]], None] | None = None,
    ) -> Certificate:
        """CERTIFY for each example of the batch ``x``."""
        gen = torch_generator(self.seed)
        preds, radii, lows = [], [], []
        for i in range(len(x)):
            c_a = int(self._counts(model, x[i], self.n0, gen).argmax())
            n_a = int(self._counts(model, x[i], self.n, gen)[c_a])
            p_low = clopper_pearson_lower(n_a, self.n, self.alpha)
            if p_low < 0.5:
                preds.append(ABSTAIN)
                radii.append(0.0)
            else:
                preds.append(c_a)
                radii.append(float(self.sigma * norm.ppf(p_low)))
            lows.append(p_low)
            if progress is not None:
                progress(i + 1, len(x), {})
        return Certificate(np.array(preds), np.array(radii), np.array(lows))

    def predict(self, model: Model, x: torch.Tensor) -> np.ndarray:
        """PREDICT for each example: the top class, or :data:`ABSTAIN` when not significant."""
        gen = torch_generator(self.seed)
        out = []
        for i in range(len(x)):
            counts = self._counts(model, x[i], self.n, gen)
            top2 = np.argsort(counts)[::-1][:2]
            n_a, n_b = int(counts[top2[0]]), int(counts[top2[1]])
            significant = binomtest(n_a, n_a + n_b, 0.5).pvalue <= self.alpha if n_a + n_b else False
            out.append(int(top2[0]) if significant else ABSTAIN)
        return np.array(out)


def certified_accuracy(cert: Certificate, y: np.ndarray, radii: list[float]) -> list[float]:
    """Fraction of examples predicted correctly with a certified radius of at least each ``r``."""
    correct = cert.prediction == np.asarray(y)
    return [float((correct & (cert.radius >= r)).mean()) for r in radii]
