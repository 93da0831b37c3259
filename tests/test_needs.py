"""A test whose server or browser is missing skips locally and fails under CI."""

from __future__ import annotations

import pytest

from tests._needs import missing, need_module


@pytest.mark.parametrize("ci", ["1", "true"])
def test_missing_prerequisites_fail_under_ci(monkeypatch: pytest.MonkeyPatch, ci: str) -> None:
    monkeypatch.setenv("CI", ci)
    with pytest.raises(pytest.fail.Exception, match="redis-server is not installed"):
        missing("redis-server is not installed")
    with pytest.raises(pytest.fail.Exception, match="no_such_package_dlsec"):
        need_module("no_such_package_dlsec", "pip install it")


def test_missing_prerequisites_skip_elsewhere(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception, match="redis-server is not installed"):
        missing("redis-server is not installed")
    with pytest.raises(pytest.skip.Exception, match="no_such_package_dlsec"):
        need_module("no_such_package_dlsec", "pip install it")
    assert need_module("json", "stdlib").dumps([1]) == "[1]"
