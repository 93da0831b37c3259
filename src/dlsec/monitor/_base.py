"""The detector contract: windows, results, the two base classes and the registry.

Every detector follows scikit-learn: keyword-only hyperparameters stored as given in
``__init__``, ``fit(reference) -> self`` learning attributes that end in ``_``, and a
:class:`~dlsec.errors.NotFittedError` when scored too early. ``score(window)`` returns a
:class:`DetectorResult`. A detector declares which parts of a window it reads (``requires``):
the inputs ``x``, the model's class probabilities ``probs`` and/or the (delayed) labels ``y``.

Detectors of packages above monitor (the synthetic-image detector of :mod:`dlsec.generative`)
are declared under the ``dlsec.monitor_detectors`` entry-point group (``pyproject.toml``) and
imported the first time their name is looked up (:func:`detector_class`), as model schemes are:
monitor imports none of them, and a declared detector whose package fails to import is an error
naming it, never a rule quietly dropped.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from typing import Any, ClassVar, TypeVar

import numpy as np
import torch
from scipy import stats

from dlsec.core.registration import register_in
from dlsec.errors import NotFittedError, UsageError

__all__ = [
    "DETECTORS",
    "CannotRun",
    "Detector",
    "DetectorResult",
    "ENTRY_POINT_GROUP",
    "ExampleDetector",
    "Window",
    "detector_class",
    "detector_params",
    "get_detector",
    "known_detectors",
    "register_detector",
]

Part = str  # "x", "probs" or "y"


class CannotRun(UsageError):
    """A detector cannot run on what it was given: no model, a model of too little access, no labels.

    An offline check lists such a detector in ``not_run`` with this message as the reason
    (the verdict is then ``partial``); anywhere else it is a usage error like any other.
    """


@dataclass(frozen=True)
class Window:
    """A batch of production traffic: inputs, the model's probabilities, the delayed labels.

    Any part may be missing; a detector says which parts it needs (``requires``).

    Example:
        >>> w = Window(x=np.zeros((4, 2), dtype=np.float32))
        >>> len(w), w.take(np.array([0, 1])).x.shape
        (4, (2, 2))
    """

    x: np.ndarray | None = None
    probs: np.ndarray | None = None
    y: np.ndarray | None = None

    def __post_init__(self) -> None:
        sizes = {len(a) for a in (self.x, self.probs, self.y) if a is not None}
        if len(sizes) > 1:
            raise UsageError(f"a window's inputs, probabilities and labels differ in length: {sorted(sizes)}")

    def __len__(self) -> int:
        for part in (self.x, self.probs, self.y):
            if part is not None:
                return int(len(part))
        return 0

    def take(self, index: np.ndarray) -> Window:
        """The rows at ``index``."""
        return Window(
            x=None if self.x is None else self.x[index],
            probs=None if self.probs is None else self.probs[index],
            y=None if self.y is None else self.y[index],
        )

    def part(self, name: Part, *, who: str) -> np.ndarray:
        value = getattr(self, name)
        if value is None:
            what = {
                "x": "inputs",
                "probs": "the model's probabilities (give a model: pass --model)",
                "y": "labels",
            }[name]
            raise CannotRun(f"{who} needs {what} in each window")
        return np.asarray(value)


def as_window(data: Window | np.ndarray | torch.Tensor, requires: tuple[Part, ...]) -> Window:
    """``data`` as a window: an array fills the first part the detector requires."""
    if isinstance(data, Window):
        return data
    arr = data.detach().cpu().numpy() if isinstance(data, torch.Tensor) else np.asarray(data)
    return Window(**{requires[0]: arr})


@dataclass(frozen=True)
class DetectorResult:
    """The verdict of a detector on one window.

    Attributes:
        detector: the detector's registered name.
        statistic: the test statistic (larger means more drift or more suspicious traffic).
        p_value: the p-value under "no change", or ``None`` for score-only detectors (PSI).
        threshold: what ``drift`` was decided against: the significance level when there is a
            p-value, else the statistic's threshold.
        drift: whether the detector fires.
        details: detector-specific measurements (per-feature p-values, means, counts).
    """

    detector: str
    statistic: float
    p_value: float | None
    threshold: float
    drift: bool
    details: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "detector": self.detector,
            "statistic": self.statistic,
            "p_value": self.p_value,
            "threshold": self.threshold,
            "drift": self.drift,
            "details": self.details,
        }


class Detector:
    """Base of window detectors: ``fit(reference) -> self`` then ``score(window)``.

    Subclasses set ``name`` and ``requires`` and write ``_fit(window)`` and ``_score(window)``;
    :meth:`statistic` (used by :class:`~dlsec.monitor.OnlineMonitor` to calibrate thresholds by
    simulation) defaults to the statistic of :meth:`score` and is overridden where a cheaper
    form exists (MMD without its permutations).
    """

    name: str = "detector"
    requires: ClassVar[tuple[Part, ...]] = ("x",)
    needs_model: ClassVar[bool] = False

    @classmethod
    def check_params(cls, params: Mapping[str, Any]) -> None:
        """Refuse bad values of settings before anything runs (``monitor.yaml`` names the line).

        The default accepts everything; a detector whose settings have a closed set of values
        overrides it and raises :class:`~dlsec.errors.UsageError` with a one-line reason.
        """
        del params

    def fit(self, reference: Window | np.ndarray | torch.Tensor) -> Detector:
        """Learn the reference distribution; returns ``self``."""
        window = as_window(reference, self.requires)
        for part in self.requires:
            window.part(part, who=self.name)
        if len(window) < 2:
            raise UsageError(f"{self.name}: the reference needs at least 2 rows, got {len(window)}")
        self._fit(window)
        return self

    def score(self, window: Window | np.ndarray | torch.Tensor) -> DetectorResult:
        """Test one window against the reference."""
        return self._score(self._checked(window))

    def statistic(self, window: Window | np.ndarray | torch.Tensor) -> float:
        """The test statistic alone (larger means more change)."""
        return self.score(window).statistic

    def _checked(self, window: Window | np.ndarray | torch.Tensor) -> Window:
        self._check_fitted()
        w = as_window(window, self.requires)
        for part in self.requires:
            w.part(part, who=self.name)
        if len(w) < 1:
            raise UsageError(f"{self.name}: the window is empty")
        return w

    def _check_fitted(self) -> None:
        if not any(k.endswith("_") and not k.startswith("_") for k in vars(self)):
            raise NotFittedError(f"{type(self).__name__} is not fitted yet; call fit(reference) first")

    def _fit(self, window: Window) -> None:
        raise NotImplementedError

    def _score(self, window: Window) -> DetectorResult:
        raise NotImplementedError

    def __repr__(self) -> str:
        params = ", ".join(f"{k}={v!r}" for k, v in detector_params(self).items())
        return f"{type(self).__name__}({params})"


class ExampleDetector(Detector):
    """Base of per-example detectors (adversarial or triggered inputs).

    ``score_samples(x)`` gives one suspicion score per example (larger is more suspicious);
    ``fit(x_clean)`` learns what the detector needs and sets ``threshold_`` at the ``1 - fpr``
    quantile of the scores of held-out clean examples (the last ``calibration_fraction`` of a
    seeded shuffle), so that ``predict`` flags about ``fpr`` of clean traffic. On a window,
    ``score`` tests whether more examples are flagged than the calibration explains (one-sided
    beta-binomial test at ``alpha``, exact for exchangeable clean data).

    Subclasses write ``_fit_state(x, y)`` (may do nothing) and ``_score_torch(x)``.
    """

    requires: ClassVar[tuple[Part, ...]] = ("x",)
    needs_model = True

    fpr: float
    alpha: float
    calibration_fraction: float
    seed: int
    batch_size: int

    def fit(
        self, reference: Window | np.ndarray | torch.Tensor, y: np.ndarray | None = None
    ) -> ExampleDetector:
        """Fit on clean examples (labels optional: the model's predictions stand in)."""
        if not 0.0 < self.fpr < 1.0:
            raise UsageError(f"{self.name}: fpr must be between 0 and 1, got {self.fpr}")
        window = as_window(reference, self.requires)
        x = window.part("x", who=self.name)
        labels = y if y is not None else window.y
        n = len(x)
        n_cal = int(round(n * self.calibration_fraction)) if self._has_state() else n
        if n_cal < 10 or n - n_cal < (2 if self._has_state() else 0):
            raise UsageError(f"{self.name}: {n} clean examples are too few to fit and calibrate; give more")
        order = np.random.default_rng(self.seed).permutation(n) if self._has_state() else np.arange(n)
        fit_idx, cal_idx = order[: n - n_cal], order[n - n_cal :]
        if self._has_state():
            self._fit_state(x[fit_idx], None if labels is None else np.asarray(labels)[fit_idx])
        self._set_threshold(self.score_samples(x[cal_idx], _fitting=True))
        return self

    def _set_threshold(self, cal: np.ndarray) -> None:
        self.threshold_ = float(np.quantile(cal, 1.0 - self.fpr, method="higher"))
        self.n_calibration_ = len(cal)
        self.calibration_exceed_ = int((cal > self.threshold_).sum())

    def calibrate(self, x_clean: np.ndarray | torch.Tensor) -> ExampleDetector:
        """Re-set ``threshold_`` from other clean examples (e.g. held out from the model's training).

        Scores of the model's own training data are often lower than those of new clean data;
        calibrating on held-out data keeps the false-positive rate at ``fpr``.
        """
        cal = self.score_samples(x_clean)
        if len(cal) < 10:
            raise UsageError(f"{self.name}: calibrate on at least 10 clean examples, got {len(cal)}")
        self._set_threshold(cal)
        return self

    def score_samples(self, x: np.ndarray | torch.Tensor, *, _fitting: bool = False) -> np.ndarray:
        """One suspicion score per example (NumPy, float64)."""
        if not _fitting:
            self._check_fitted()
        t = torch.as_tensor(np.asarray(x) if not isinstance(x, torch.Tensor) else x).float()
        out = []
        for start in range(0, t.shape[0], self.batch_size):
            with torch.no_grad():
                out.append(self._score_torch(t[start : start + self.batch_size]).detach().cpu())
        if not out:
            return np.zeros(0)
        return torch.cat(out).double().numpy()

    def predict(self, x: np.ndarray | torch.Tensor) -> np.ndarray:
        """``True`` where an example is flagged (score above ``threshold_``)."""
        return self.score_samples(x) > self.threshold_

    def _score(self, window: Window) -> DetectorResult:
        scores = self.score_samples(window.part("x", who=self.name))
        flagged = int((scores > self.threshold_).sum())
        n = len(scores)
        # Under exchangeability the chance that a clean example exceeds the threshold (an order
        # statistic of n_cal calibration scores, k_cal of them above it) is Beta(k_cal + 1,
        # n_cal - k_cal); the flagged count is then beta-binomial. This accounts for the noise of
        # a threshold set on few calibration examples (a plain Binomial(n, fpr) test does not).
        a, b = self.calibration_exceed_ + 1, self.n_calibration_ - self.calibration_exceed_
        p = float(stats.betabinom.sf(flagged - 1, n, a, b))
        return DetectorResult(
            self.name,
            flagged / n,
            p,
            self.alpha,
            p < self.alpha,
            {
                "flagged": flagged,
                "n": n,
                "expected_fpr": self.fpr,
                "example_threshold": self.threshold_,
                "mean_score": float(scores.mean()),
            },
        )

    def statistic(self, window: Window | np.ndarray | torch.Tensor) -> float:
        w = self._checked(window)
        return float((self.score_samples(w.part("x", who=self.name)) > self.threshold_).mean())

    def _has_state(self) -> bool:
        return type(self)._fit_state is not ExampleDetector._fit_state

    def _fit_state(self, x: np.ndarray, y: np.ndarray | None) -> None:
        return None

    def _score_torch(self, x: torch.Tensor) -> torch.Tensor:
        """Differentiable scores of a batch (adaptive attacks take gradients through it)."""
        raise NotImplementedError


DETECTORS: dict[str, type[Detector]] = {}
D = TypeVar("D", bound=type[Detector])
ENTRY_POINT_GROUP = "dlsec.monitor_detectors"


def register_detector(name: str) -> Callable[[D], D]:
    """Class decorator: register a detector under ``name`` (duplicates are refused)."""

    return register_in(DETECTORS, name, "a detector named")


def known_detectors() -> list[str]:
    """The registered detectors' names and those declared under :data:`ENTRY_POINT_GROUP`, sorted."""
    return sorted(set(DETECTORS) | {ep.name for ep in entry_points(group=ENTRY_POINT_GROUP)})


def detector_class(name: str) -> type[Detector]:
    """The detector class registered as ``name``, importing its package if an entry point declares it.

    An entry point names ``module:attribute``; loading it imports the module, whose
    :func:`register_detector` decorator files the class (a class loaded but not registered under
    ``name`` is filed here).

    Raises:
        UsageError: ``name`` is neither registered nor declared, or its package fails to import
            (one line naming the entry point and the import error: the rule fails closed).
    """
    if name not in DETECTORS:
        for ep in entry_points(group=ENTRY_POINT_GROUP, name=name):
            try:
                loaded = ep.load()
            except Exception as exc:  # any import failure of the plugin: refuse the rule
                reason = " ".join(str(exc).split()) or type(exc).__name__
                raise UsageError(
                    f"detector {name!r} (entry point {ep.value}) failed to load: {reason}"
                ) from None
            if not (isinstance(loaded, type) and issubclass(loaded, Detector)):
                raise UsageError(f"detector {name!r}: entry point {ep.value} is not a Detector class")
            DETECTORS.setdefault(name, loaded)
            break
    if name not in DETECTORS:
        raise UsageError(f"unknown detector {name!r}; known: {', '.join(known_detectors())}")
    return DETECTORS[name]


def get_detector(name: str, **params: Any) -> Detector:
    """A registered detector by name, configured by ``params``."""
    cls = detector_class(name)
    try:
        return cls(**params)
    except TypeError as exc:
        raise UsageError(f"detector {name!r}: {exc}") from None


def settable_params(cls: type[Detector]) -> list[str]:
    """The keyword hyperparameters of a detector class."""
    sig = inspect.signature(cls.__init__)
    return [p.name for p in sig.parameters.values() if p.kind is inspect.Parameter.KEYWORD_ONLY]


def detector_params(det: Detector) -> dict[str, Any]:
    """A detector's hyperparameters as stored (callables and models shown by type)."""
    out: dict[str, Any] = {}
    for name in settable_params(type(det)):
        value = getattr(det, name, None)
        out[name] = (
            value if value is None or isinstance(value, int | float | str | bool) else type(value).__name__
        )
    return out
