"""The web dashboard for the security team, served beside the gateway (``dlsec ui``)."""
