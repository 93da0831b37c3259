"""Training: the standard recipe now; hardened recipes (adversarial, DP) build on it."""

from dlsec.train._standard import TrainConfig, TrainedModel, fit, fit_normalisation, train

__all__ = ["TrainConfig", "TrainedModel", "fit", "fit_normalisation", "train"]
