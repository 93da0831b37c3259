"""Backdoor attacks: a trigger that switches a trained model's prediction to the attacker's class.

``BadNets`` stamps a patch and relabels, ``Blended`` mixes a noise pattern in and relabels,
``CleanLabel`` (Turner et al. 2019) keeps every label and poisons adversarially perturbed
target-class rows with the trigger. Each is a poisoning attack (``attack.poison(data)``,
registered in :data:`dlsec.attacks.poisoning.POISONINGS`) whose result carries the trigger.

Example:
    >>> from dlsec.core import load_dataset
    >>> from dlsec.attacks.backdoor import BadNets
    >>> from dlsec.attacks.poisoning import train_victim
    >>> train, test = load_dataset("builtin:digits").split()
    >>> result = BadNets(rate=0.1, target=0).poison(train)
    >>> model = train_victim(result.data)                        # doctest: +SKIP
    >>> result.evaluate(model, test)                             # doctest: +SKIP
    {'attack_success_rate': 1.0, 'clean_accuracy': 0.98}
"""

from dlsec.attacks.backdoor._attacks import BackdoorAttack, BadNets, Blended, CleanLabel
from dlsec.attacks.backdoor._triggers import BlendTrigger, PatchTrigger, Trigger

__all__ = ["BackdoorAttack", "BadNets", "BlendTrigger", "Blended", "CleanLabel", "PatchTrigger", "Trigger"]
