"""The registry and keys of the gateway tests."""

from tests.serve.conftest import home, keys  # noqa: F401  (fixtures)
