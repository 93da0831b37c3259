"""The recipe registry, the shared options (augmentation, early stopping, dropout, schedules)."""

import numpy as np
import pytest
import torch

from dlsec.core import InputSpec, load_dataset
from dlsec.core.augment import augment_batch
from dlsec.errors import UsageError
from dlsec.train import RECIPES, Recipe, Standard, TrainConfig, get_recipe, register_recipe, train


def test_every_issue_recipe_is_registered_and_duplicates_are_refused():
    assert {"standard", "pgd-at", "trades", "fast-at", "dp-sgd"} <= set(RECIPES)
    with pytest.raises(UsageError, match="already registered"):
        register_recipe("pgd-at")(Standard)
    assert RECIPES["pgd-at"].__name__ == "PGDAT"


def test_get_recipe_names_what_is_wrong():
    with pytest.raises(UsageError, match="unknown recipe 'madry'.*pgd-at"):
        get_recipe("madry")
    with pytest.raises(UsageError, match="does not take epsilon; it takes: eps, norm, steps, step_size"):
        get_recipe("pgd-at", eps=0.1, epsilon=1.0)
    assert RECIPES["dp-sgd"].required_params() == ["epsilon"]
    recipe = get_recipe("trades", eps=0.1, beta=1.0)
    assert recipe.get_params() == {"eps": 0.1, "norm": "linf", "steps": 10, "step_size": None, "beta": 1.0}
    assert repr(get_recipe("standard")) == "Standard()"


def test_recipe_defaults_yield_to_the_callers_values():
    dp = get_recipe("dp-sgd", epsilon=1.0)
    assert dp.default_config().optimizer == "sgd"
    assert dp.default_config(lr=0.1).lr == 0.1
    with pytest.raises(UsageError, match="unknown training option"):
        dp.default_config(learning_rate=0.1)
    assert isinstance(dp, Recipe)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"optimizer": "rmsprop"},
        {"momentum": 0.9},  # needs sgd
        {"optimizer": "sgd", "momentum": 1.0},
        {"dropout": 1.0},
        {"augment_noise": -0.1},
        {"augment_shift": -1},
        {"early_stopping": -1},
        {"val_size": 1.0},
        {"lr_schedule": "step"},
        {"seed": 1.5},
    ],
)
def test_bad_shared_options_are_refused(kwargs):
    with pytest.raises(UsageError):
        TrainConfig(**kwargs)


def test_cosine_schedule_decays_from_lr():
    config = TrainConfig(epochs=4, lr=1.0, lr_schedule="cosine")
    assert [round(config.lr_at(e), 4) for e in range(4)] == [1.0, 0.8536, 0.5, 0.1464]
    assert TrainConfig(lr=0.3).lr_at(3) == 0.3


def test_image_augmentation_shifts_by_at_most_the_limit_and_stays_in_bounds():
    spec = InputSpec(shape=(1, 8, 8), num_classes=2)
    x = torch.zeros(64, 1, 8, 8)
    x[:, 0, 4, 4] = 1.0
    out = augment_batch(x, spec, shift=1, noise=0.0, gen=torch.Generator().manual_seed(0))
    peaks = [divmod(int(img.argmax()), 8) for img in out[:, 0]]
    assert all(abs(r - 4) <= 1 and abs(c - 4) <= 1 for r, c in peaks)
    assert len(set(peaks)) > 1  # it moves
    assert torch.allclose(out.sum(dim=(1, 2, 3)), torch.ones(64))  # a shift, not a blur
    noisy = augment_batch(x, spec, shift=1, noise=0.5, gen=torch.Generator().manual_seed(0))
    assert float(noisy.min()) >= 0.0 and float(noisy.max()) <= 1.0
    again = augment_batch(x, spec, shift=1, noise=0.5, gen=torch.Generator().manual_seed(0))
    assert torch.equal(noisy, again)


def test_tabular_augmentation_adds_range_scaled_noise_within_bounds():
    spec = InputSpec(shape=(2,), num_classes=2, kind="tabular", lower=(0.0, 0.0), upper=(1.0, 100.0))
    x = torch.tensor([[0.5, 50.0]]).repeat(2000, 1)
    out = augment_batch(x, spec, shift=1, noise=0.02, gen=torch.Generator().manual_seed(0))
    std = (out - x).std(dim=0)
    assert std[0] == pytest.approx(0.02, rel=0.1) and std[1] == pytest.approx(2.0, rel=0.1)


def test_standard_with_regularisation_records_what_it_did():
    data = load_dataset("builtin:breast-cancer")
    config = TrainConfig(epochs=6, dropout=0.25, augment=True, early_stopping=2, val_size=0.2, seed=1)
    result = train(data, recipe="standard", config=config, device="cpu")
    card = result.card()
    assert card["arch_kwargs"]["dropout"] == 0.25
    assert card["dataset"]["split"]["validation_rows"] == int(np.ceil(0.2 * 426))
    assert card["dataset"]["split"]["train_rows"] == 426 - card["dataset"]["split"]["validation_rows"]
    assert all("val_score" in h for h in card["history"])
    best = max(range(len(card["history"])), key=lambda i: card["history"][i]["val_score"])
    assert card["training"]["best_epoch"] == best + 1
    assert card["robustness"] is None and card["privacy"] is None
    with pytest.raises(UsageError, match="conflicts"):
        train(data, config=TrainConfig(epochs=1, dropout=0.2), arch_kwargs={"dropout": 0.5}, device="cpu")


def test_standard_default_is_the_original_recipe_bit_for_bit():
    # The zoo's cached models depend on it: no augmentation, no validation split, same draws.
    from dlsec.core.arch import MLP
    from dlsec.train import fit_normalisation

    data = load_dataset("builtin:breast-cancer")
    trained = train(data, config=TrainConfig(epochs=2, seed=5), device="cpu").model.module.state_dict()
    train_set, _ = data.split(test_size=0.25, seed=0)
    mean, std = fit_normalisation(train_set).normalisation()
    x, y = (torch.from_numpy(train_set.x) - mean) / std, torch.from_numpy(train_set.y)
    gen = torch.Generator().manual_seed(5)
    with torch.random.fork_rng():
        torch.manual_seed(5)
        module = MLP(30, 2, hidden=[64, 32])
        opt = torch.optim.AdamW(module.parameters(), lr=1e-3, weight_decay=0.0)
        for _ in range(2):
            order = torch.randperm(len(y), generator=gen)
            for start in range(0, len(y), 64):
                idx = order[start : start + 64]
                loss = torch.nn.functional.cross_entropy(module(x[idx]), y[idx])
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
    for key, value in module.state_dict().items():
        assert torch.equal(value, trained[key]), key
