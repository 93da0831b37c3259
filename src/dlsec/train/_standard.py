"""Training entry point :func:`train` (split, build, train, score, card); the loop is in core."""

from __future__ import annotations

import platform
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from dlsec.core.arch import build_architecture
from dlsec.core.card import CARD_FILE, TrainingCard
from dlsec.core.checkpoint import Checkpoint, fingerprint
from dlsec.core.data import Dataset
from dlsec.core.evaluation import evaluate
from dlsec.core.loop import FitOutcome, Progress, as_recipe, resolve_architecture, run_training
from dlsec.core.model import WhiteBoxModel, default_device, inference_mode
from dlsec.core.recipe import Recipe
from dlsec.core.trainconfig import TrainConfig
from dlsec.errors import UsageError

__all__ = ["TrainedModel", "robust_accuracy", "train"]


def robust_accuracy(
    model: WhiteBoxModel, data: Dataset, *, eps: float, norm: str = "linf", n: int = 200, seed: int = 0
) -> dict[str, Any]:
    """AutoAttack on the first ``n`` rows of ``data``: the card's robustness.

    AutoAttack picks its version itself (``auto``): standard, or rand (EOT over 20 passes,
    scored by the expectation) when the model's forward pass is random; the record names it.

    Example:
        >>> robust_accuracy(model, test_set, eps=0.1, n=100)["robust_accuracy"]  # doctest: +SKIP
        0.71
    """
    from dlsec.attacks import AutoAttack

    k = min(int(n), len(data))
    if k < 1:
        raise UsageError(f"robust evaluation needs at least one example, got n={n}")
    x, y = torch.from_numpy(data.x[:k]), torch.from_numpy(data.y[:k])
    result = AutoAttack(eps=eps, norm=norm, seed=seed)(model, x, y)
    version = result.extras["version"]
    return {
        "attack": f"autoattack ({version})",
        "version": version,
        "scoring": f"expectation over {result.passes} passes" if result.passes > 1 else "one pass",
        "eps": eps,
        "norm": norm,
        "n": k,
        "rows": f"first {k} rows of the test split",
        "seed": seed,
        "clean_accuracy": result.clean_accuracy,
        "robust_accuracy": result.robust_accuracy,
        "fooled_by": result.extras.get("fooled_by"),
    }


@dataclass
class TrainedModel:
    """A model trained by :func:`train`, with what is needed to write its card."""

    model: WhiteBoxModel
    arch: str
    arch_kwargs: dict[str, Any]
    config: TrainConfig
    dataset: dict[str, Any]
    metrics: dict[str, float]
    history: list[dict[str, float]] = field(default_factory=list)
    recipe: str = "standard"
    recipe_params: dict[str, Any] = field(default_factory=dict)
    robustness: dict[str, Any] | None = None
    privacy: dict[str, Any] | None = None
    training: dict[str, Any] = field(default_factory=dict)

    def card(self, *, name: str | None = None, weights_sha256: str | None = None) -> TrainingCard:
        """The training card: architecture, spec, recipe and its hyperparameters, seeds, data
        hash, clean and robust metrics, privacy budget spent, versions."""
        import dlsec

        fields = {
            "schema": "dlsec.model-card/1",
            "name": name,
            "architecture": self.arch,
            "arch_kwargs": self.arch_kwargs,
            "input_spec": self.model.spec.to_dict(),
            "recipe": self.recipe,
            "recipe_params": self.recipe_params,
            "train_config": asdict(self.config),
            "seed": self.config.seed,
            "seeds": {"train": self.config.seed, "split": self.dataset.get("split", {}).get("seed")},
            "dataset": self.dataset,
            "metrics": self.metrics,
            "robustness": self.robustness,
            "privacy": self.privacy,
            "training": {**self.training, "epochs_run": len(self.history)},
            "history": self.history,
            "weights": {"file": "model.safetensors", "sha256": weights_sha256},
            "versions": _versions(dlsec.__version__),
        }
        return TrainingCard(fields)

    def save(
        self, out_dir: str | Path, *, name: str | None = None, extra: dict[str, Any] | None = None
    ) -> tuple[Path, Path]:
        """Write ``model.safetensors`` and its card ``model.json`` into ``out_dir`` atomically.

        ``extra`` adds fields to the card (the zoo records its recipe hash there).
        """
        from dlsec.core.io import save_safetensors_model
        from dlsec.fsutil import sha256_file

        out = Path(out_dir)
        weights = save_safetensors_model(
            self.model.module,
            self.model.spec,
            out / "model.safetensors",
            arch=self.arch,
            arch_kwargs=self.arch_kwargs,
        )
        card = self.card(name=name, weights_sha256=sha256_file(weights)).with_fields(**(extra or {}))
        return weights, card.write(out / CARD_FILE)


def _versions(dlsec_version: str) -> dict[str, str]:
    versions = {
        "dlsec": dlsec_version,
        "torch": torch.__version__,
        "python": platform.python_version(),
        "platform": sys.platform,
    }
    try:
        from importlib.metadata import version

        versions["opacus"] = version("opacus")
    except Exception:  # noqa: BLE001 - optional: absent or unreadable metadata
        pass
    return versions


def train(
    data: Dataset,
    *,
    recipe: Recipe | str | None = None,
    arch: str | None = None,
    arch_kwargs: dict[str, Any] | None = None,
    config: TrainConfig | None = None,
    test_size: float = 0.25,
    split_seed: int = 0,
    device: torch.device | str | None = None,
    progress: Progress | None = None,
    checkpoint_dir: str | Path | None = None,
    robust_n: int = 200,
    robust_eps: float | None = None,
) -> TrainedModel:
    """Split ``data``, train a classifier on the train part and score it on the test part.

    Args:
        data: the labelled dataset.
        recipe: a :class:`Recipe` or a registered name (default: ``standard``).
        arch: a built-in architecture name or ``module:factory``; default chosen by the
            recipe, else from the data.
        arch_kwargs: factory keyword arguments; for the default architecture they are merged
            over the defaults derived from the data.
        config: the shared hyperparameters (default: the recipe's ``default_config()``).
        test_size: fraction held out for the clean (and robust) measurement.
        split_seed: seed of the deterministic stratified split.
        device: where to train (default CUDA when present, else CPU).
        progress: called after each epoch with ``(epoch, epochs, stats)``.
        checkpoint_dir: where to checkpoint after every epoch; calling again with the same
            arguments resumes the run where it stopped.
        robust_n: test rows AutoAttack scores robust accuracy on (adversarial recipes, or
            when ``robust_eps`` is given); 0 skips it.
        robust_eps: budget of the robust measurement (default: an adversarial recipe's own).

    Example:
        >>> from dlsec.core import load_dataset
        >>> result = train(load_dataset("builtin:breast-cancer"), config=TrainConfig(epochs=5))
        >>> result.metrics["clean_accuracy"] > 0.8
        True
    """
    chosen = as_recipe(recipe)
    config = config or chosen.default_config()
    if isinstance(robust_n, bool) or not isinstance(robust_n, int) or robust_n < 0:
        raise UsageError(f"robust_n must be an integer >= 0, got {robust_n!r}")
    train_set, test_set = data.split(test_size=test_size, seed=split_seed)
    fit_set, val_set = train_set, None
    if config.early_stopping:
        fit_set, val_set = train_set.split(test_size=config.val_size, seed=config.seed)
    arch, kwargs = resolve_architecture(chosen, data.spec, arch, arch_kwargs, config)
    spec = chosen.input_spec(fit_set)
    target = torch.device(device) if device is not None else default_device()
    with torch.random.fork_rng(devices=[target] if target.type == "cuda" else []):
        torch.manual_seed(config.seed)
        module = build_architecture(arch, kwargs).to(target)
    model = WhiteBoxModel(module, spec, device=target)
    with inference_mode(module):
        out = model(torch.from_numpy(fit_set.x[:2]).to(target))
    if out.ndim != 2 or out.shape[1] != spec.num_classes:
        raise UsageError(
            f"architecture {arch!r} outputs shape {tuple(out.shape)}; expected (N, {spec.num_classes}) logits"
        )
    split: dict[str, Any] = {
        "test_size": test_size,
        "seed": split_seed,
        "train_rows": len(fit_set),
        "test_rows": len(test_set),
    }
    if val_set is not None:
        split.update(validation_rows=len(val_set), validation_seed=config.seed)
    dataset = {"name": data.name, "sha256": data.sha256, "rows": len(data), "split": split}
    checkpoint = None
    if checkpoint_dir is not None:
        key = {
            "recipe": chosen.name,
            "params": chosen.get_params(),
            "config": asdict(config),
            "arch": arch,
            "arch_kwargs": kwargs,
            "dataset": dataset,
            "spec": spec.to_dict(),
        }
        checkpoint = Checkpoint(checkpoint_dir, fingerprint=fingerprint(key))
    outcome: FitOutcome = run_training(
        model, fit_set, config, chosen, validation=val_set, progress=progress, checkpoint=checkpoint
    )
    metrics = {
        "clean_accuracy": evaluate(model, test_set).accuracy,
        "train_accuracy": evaluate(model, fit_set).accuracy,
    }
    eps = (
        robust_eps
        if robust_eps is not None
        else (getattr(chosen, "eps", None) if chosen.adversarial else None)
    )
    robustness = None
    if eps is not None and robust_n > 0:
        norm = getattr(chosen, "norm", "linf") if chosen.adversarial else "linf"
        robustness = robust_accuracy(model, test_set, eps=float(eps), norm=norm, n=robust_n, seed=config.seed)
        metrics["robust_accuracy"] = robustness["robust_accuracy"]
    privacy = outcome.summary.get("privacy")
    if privacy is not None:
        metrics["epsilon_spent"] = privacy["epsilon_spent"]
    training = {
        "stopped": outcome.stopped,
        "best_epoch": outcome.best_epoch,
        "resumed_from_epoch": outcome.resumed_from,
        **{k: v for k, v in outcome.summary.items() if k != "privacy"},
    }
    return TrainedModel(
        model,
        arch,
        kwargs,
        config,
        dataset,
        metrics,
        outcome.history,
        recipe=chosen.name,
        recipe_params=chosen.get_params(),
        robustness=robustness,
        privacy=privacy,
        training=training,
    )
