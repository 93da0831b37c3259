"""Gateway configuration files (the app factory for uvicorn is ``dlsec.respond.gateway.app_from_env``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import Field, ValidationError

from dlsec.errors import UsageError
from dlsec.serve._gateway import GatewayConfig

__all__ = ["load_gateway_config"]


def load_gateway_config(
    path: str | Path | None,
    *,
    models: str | None = None,
    alias: str | None = None,
    redis_url: str | None = None,
    generators: str | None = None,
    **extra: str | None,
) -> GatewayConfig:
    """Read a gateway YAML (if given; errors name the line and field) and apply command-line overrides."""
    raw: dict[str, Any] = {}
    if path is not None:
        from dlsec.core.config import load_yaml_model

        raw = load_yaml_model(
            path, _FileConfig, error=UsageError, what="gateway config", hint="models, alias, max_batch, ..."
        ).model_dump(exclude_unset=True)
    if models is not None:
        raw["models"] = [m.strip() for m in models.split(",") if m.strip()]
    if alias is not None:
        raw["alias"] = alias
    if redis_url is not None:
        raw["redis_url"] = redis_url
    if generators is not None:
        raw["generators"] = [g.strip() for g in generators.split(",") if g.strip()]
    raw.update({k: v for k, v in extra.items() if v is not None})
    if not raw.get("models"):
        raise UsageError("name the models to serve: --models NAME[,NAME] or `models:` in --config")
    try:
        return GatewayConfig.model_validate(raw)
    except ValidationError as exc:
        err = exc.errors()[0]
        raise UsageError(f"{'.'.join(str(p) for p in err['loc'])}: {err['msg']}") from None


class _FileConfig(GatewayConfig):
    """A config file may leave ``models`` to the command line."""

    models: list[str] = Field(default_factory=list)
