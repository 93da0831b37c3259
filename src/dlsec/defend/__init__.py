"""Defences against poisoning and backdoors: a training-set audit, a model scan, STRIP.

* :class:`DataAuditor` scores every training row and flags poisoned and mislabelled ones.
* :class:`NeuralCleanse` scans a trained model for a backdoor and reconstructs its trigger.
* :class:`STRIP` flags triggered inputs at run time (``fit`` / ``score`` / ``threshold_``).
* :class:`ShillingDetector` finds fake profiles in recommender ratings.

Example:
    >>> from dlsec.defend import DataAuditor
    >>> report = DataAuditor().audit(data)                   # doctest: +SKIP
    >>> report.flagged, report.suspected_target              # doctest: +SKIP
"""

from dlsec.defend.audit import AuditReport, DataAuditor
from dlsec.defend.scan import BackdoorFound, NeuralCleanse, ScanReport
from dlsec.defend.shilling import ShillingDetector, ShillingReport, profile_features, profile_suspicion
from dlsec.defend.strip import STRIP

__all__ = [
    "STRIP",
    "AuditReport",
    "BackdoorFound",
    "DataAuditor",
    "NeuralCleanse",
    "ScanReport",
    "ShillingDetector",
    "ShillingReport",
    "profile_features",
    "profile_suspicion",
]
