"""Federated learning on Flower: malicious clients, robust aggregation, gradient inversion.

The names resolve lazily (PEP 562): ``import dlsec.federated`` imports neither torch nor
Flower; the first use of a name does.

Example:
    >>> from dlsec.federated import FLConfig, simulate
    >>> result = simulate(FLConfig(num_clients=10, malicious_fraction=0.2, attack="alie",
    ...                            defense="krum", rounds=5))            # doctest: +SKIP
    >>> result.rounds[-1].accuracy, result.rounds[-1].recall            # doctest: +SKIP
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from dlsec.lazy import resolve

if TYPE_CHECKING:
    from dlsec.federated._aggregate import (
        AGGREGATORS,
        FLAME,
        Aggregate,
        Aggregator,
        Bulyan,
        FedAvg,
        FLTrust,
        FoolsGold,
        Krum,
        Median,
        MultiKrum,
        NormClipDP,
        TrimmedMean,
        build_aggregator,
        coordinate_median,
        krum_scores,
        register_aggregator,
    )
    from dlsec.federated._attacks import (
        ALIE,
        ATTACKS,
        DBA,
        IPM,
        AGRTailored,
        Attack,
        Backdoor,
        FreeRider,
        GaussianUpdate,
        LabelFlip,
        MinMax,
        MinSum,
        NoAttack,
        RoundContext,
        SignFlip,
        alie_z,
        build_attack,
        malicious_clients,
        register_attack,
        stamp_trigger,
    )
    from dlsec.federated._deploy import deploy
    from dlsec.federated._dp import (
        DP_MODES,
        DPFedAvg,
        RobustDP,
        clip_updates,
        default_delta,
        epsilon_for,
        noise_for_epsilon,
    )
    from dlsec.federated._inversion import (
        INVERSIONS,
        InversionResult,
        InversionStudy,
        invert_gradients,
        psnr,
        single_example_gradients,
        ssim,
        study_inversion,
    )
    from dlsec.federated._partition import dirichlet_partition, iid_partition, partition
    from dlsec.federated._report import (
        render_html,
        render_inversion_html,
        write_inversion_report,
        write_report,
    )
    from dlsec.federated._simulate import FLConfig, RoundRecord, SimulationResult, simulate
    from dlsec.federated._strategy import RobustFedAvg, RoundUpdates, flatten_arrays, unflatten_arrays

_EXPORTS = {
    **dict.fromkeys(
        [
            "AGGREGATORS",
            "FLAME",
            "Aggregate",
            "Aggregator",
            "Bulyan",
            "FedAvg",
            "FLTrust",
            "FoolsGold",
            "Krum",
            "Median",
            "MultiKrum",
            "NormClipDP",
            "TrimmedMean",
            "build_aggregator",
            "coordinate_median",
            "krum_scores",
            "register_aggregator",
        ],
        "_aggregate",
    ),
    **dict.fromkeys(
        [
            "ALIE",
            "AGRTailored",
            "ATTACKS",
            "DBA",
            "DPFedAvg",
            "DP_MODES",
            "IPM",
            "Attack",
            "Backdoor",
            "FreeRider",
            "GaussianUpdate",
            "LabelFlip",
            "MinMax",
            "MinSum",
            "NoAttack",
            "RoundContext",
            "SignFlip",
            "alie_z",
            "build_attack",
            "malicious_clients",
            "register_attack",
            "stamp_trigger",
        ],
        "_attacks",
    ),
    **dict.fromkeys(
        [
            "DP_MODES",
            "DPFedAvg",
            "RobustDP",
            "clip_updates",
            "default_delta",
            "epsilon_for",
            "noise_for_epsilon",
        ],
        "_dp",
    ),
    "deploy": "_deploy",
    **dict.fromkeys(["dirichlet_partition", "iid_partition", "partition"], "_partition"),
    **dict.fromkeys(
        [
            "INVERSIONS",
            "InversionResult",
            "InversionStudy",
            "invert_gradients",
            "psnr",
            "single_example_gradients",
            "ssim",
            "study_inversion",
        ],
        "_inversion",
    ),
    **dict.fromkeys(
        ["render_html", "render_inversion_html", "write_inversion_report", "write_report"], "_report"
    ),
    **dict.fromkeys(["FLConfig", "RoundRecord", "SimulationResult", "simulate"], "_simulate"),
    **dict.fromkeys(["RobustFedAvg", "RoundUpdates", "flatten_arrays", "unflatten_arrays"], "_strategy"),
}

__all__ = [
    "AGGREGATORS",
    "AGRTailored",
    "ALIE",
    "ATTACKS",
    "Aggregate",
    "Aggregator",
    "Attack",
    "Backdoor",
    "Bulyan",
    "DBA",
    "DPFedAvg",
    "DP_MODES",
    "FLAME",
    "FLConfig",
    "FLTrust",
    "FedAvg",
    "FoolsGold",
    "FreeRider",
    "GaussianUpdate",
    "INVERSIONS",
    "IPM",
    "InversionResult",
    "InversionStudy",
    "Krum",
    "LabelFlip",
    "Median",
    "MinMax",
    "MinSum",
    "MultiKrum",
    "NoAttack",
    "NormClipDP",
    "RobustDP",
    "RobustFedAvg",
    "RoundContext",
    "RoundRecord",
    "RoundUpdates",
    "SignFlip",
    "SimulationResult",
    "TrimmedMean",
    "alie_z",
    "build_aggregator",
    "build_attack",
    "clip_updates",
    "coordinate_median",
    "default_delta",
    "deploy",
    "dirichlet_partition",
    "epsilon_for",
    "flatten_arrays",
    "iid_partition",
    "invert_gradients",
    "krum_scores",
    "malicious_clients",
    "noise_for_epsilon",
    "partition",
    "psnr",
    "register_aggregator",
    "register_attack",
    "render_html",
    "render_inversion_html",
    "simulate",
    "single_example_gradients",
    "ssim",
    "stamp_trigger",
    "study_inversion",
    "unflatten_arrays",
    "write_inversion_report",
    "write_report",
]


def __getattr__(name: str) -> Any:
    return resolve(globals(), __name__, _EXPORTS, name)
