"""The web dashboard for the security team, served beside the gateway (``dlsec ui``).

Server-rendered pages over the store (models, versions with their lineage, assessment reports and
their comparison, the audit log with its Merkle proofs, alerts and incidents, API keys) and the
controls to act (quarantine, roll back, resolve, create and revoke keys), behind the gateway's
own API keys and roles. See :mod:`dlsec.ui.app` for the security model.

Example:
    >>> from dlsec.ui import create_dashboard
    >>> app = create_dashboard(home="~/.dlsec")  # doctest: +SKIP
    >>> both = beside(create_app(gateway), create_dashboard(registry=gateway.registry))  # doctest: +SKIP
"""

from dlsec.ui.app import Dashboard, User, beside, create_dashboard

__all__ = ["Dashboard", "User", "beside", "create_dashboard"]
