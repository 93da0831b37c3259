"""Compliance and fairness evidence: what a team shows an auditor, as artefacts, not prose.

Each part is a public module, imported by its path (docs/architecture.md, "comply"):

* :mod:`dlsec.comply.pii` finds personal data in training data (Presidio's recognisers, with
  checksums), per column and per row, with k-anonymity for tables, and writes redacted copies.
* :mod:`dlsec.comply.fairness` measures fairness with Fairlearn's metrics beside robustness
  (per-group robust accuracy and attack success) and mitigates with Fairlearn's reductions.
* :mod:`dlsec.comply.erasure` trains with SISA so that erasing rows retrains one shard, verifies
  every erasure with dlsec's membership inference and records it, signed, in the audit log.
* :mod:`dlsec.comply.evidence` builds the model card, the CycloneDX ML bill of materials, and the
  control mapping (GDPR, CCPA, HIPAA, EU AI Act, NIST AI RMF, ISO/IEC 42001) to the evidence
  dlsec holds, with the gaps named. Engineering evidence, not legal advice.

This package imports nothing heavy at import time; each module loads what it needs.
"""
