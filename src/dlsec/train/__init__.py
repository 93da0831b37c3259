"""Hardened training: the standard recipe, adversarial training and differentially private SGD.

Recipes register by name (``dlsec train --recipe NAME``): ``standard`` (with dropout, weight
decay, label smoothing, augmentation and early stopping), ``pgd-at``, ``trades``, ``fast-at``
and ``dp-sgd``. :func:`train` splits the data, trains, scores clean (and, for adversarial
recipes, AutoAttack) accuracy and returns a :class:`TrainedModel` that writes safetensors
weights and a training card. :func:`train_options` merges a YAML config file with options given
directly (what ``dlsec train --config`` does); :func:`train_and_save` trains as they say into a
folder, resuming an interrupted run.

Example:
    >>> from dlsec.core import load_dataset
    >>> from dlsec.train import PGDAT, TrainConfig, train
    >>> result = train(load_dataset("builtin:digits"), recipe=PGDAT(eps=0.1),
    ...                config=TrainConfig(epochs=10))                 # doctest: +SKIP
    >>> result.metrics["robust_accuracy"]                             # doctest: +SKIP
"""

from dlsec.core.loop import fit, fit_normalisation
from dlsec.core.recipe import RECIPES, Recipe, Standard, get_recipe, register_recipe
from dlsec.core.trainconfig import TrainConfig
from dlsec.train._adversarial import PGDAT, TRADES, FastAT
from dlsec.train._dp import DPSGD, UnsafeNoNoiseDPSGD
from dlsec.train._options import TrainOptions, train_and_save, train_options
from dlsec.train._standard import TrainedModel, robust_accuracy, train

__all__ = [
    "DPSGD",
    "PGDAT",
    "RECIPES",
    "TRADES",
    "FastAT",
    "Recipe",
    "Standard",
    "TrainConfig",
    "TrainOptions",
    "TrainedModel",
    "UnsafeNoNoiseDPSGD",
    "fit",
    "fit_normalisation",
    "get_recipe",
    "register_recipe",
    "robust_accuracy",
    "train",
    "train_and_save",
    "train_options",
]
