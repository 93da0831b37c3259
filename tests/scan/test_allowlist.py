"""The allowlist's own rules, one by one: what may be imported, what may be called, --allow.

Written against the mutants mutmut left alive (benchmarks/mutation.py --only allowlist).
"""

from __future__ import annotations

import pytest

from dlsec.errors import UsageError
from dlsec.scan import DEFAULT_ALLOWLIST
from dlsec.scan._allowlist import Allowlist, parse_allow, resolve_name


def test_values_may_be_imported_but_not_called_and_callables_both():
    allow = DEFAULT_ALLOWLIST
    assert allow.may_import("torch", "float32") and not allow.may_call("torch", "float32")
    assert allow.may_import("collections", "OrderedDict") and allow.may_call("collections", "OrderedDict")
    assert not allow.may_import("os", "system") and not allow.may_call("os", "system")
    # The pair is the key: a listed name under another module is not listed.
    assert not allow.may_import("os", "OrderedDict") and not allow.may_call("torch", "OrderedDict")
    assert not allow.is_extra("collections", "OrderedDict") and not allow.is_extra("os", "system")


def test_allow_adds_importable_callable_names_and_reports_only_new_ones():
    allow = DEFAULT_ALLOWLIST.extended(["argparse.Namespace", "pkg.mod:Outer.Inner", "torch.float32"])
    assert allow.may_import("argparse", "Namespace") and allow.may_call("argparse", "Namespace")
    assert allow.is_extra("argparse", "Namespace") and allow.is_extra("pkg.mod", "Outer.Inner")
    # Already listed: not reported as the user's decision, and a value stays importable.
    assert not allow.is_extra("torch", "float32") and allow.may_call("torch", "float32")
    assert allow.callables == DEFAULT_ALLOWLIST.callables and allow.values == DEFAULT_ALLOWLIST.values
    again = allow.extended(["json.loads"])
    assert again.is_extra("argparse", "Namespace") and again.is_extra("json", "loads")
    assert not DEFAULT_ALLOWLIST.may_import("argparse", "Namespace")  # the default is unchanged
    custom = Allowlist(callables=frozenset(), values=frozenset({("a", "b")}), extra=frozenset({("a", "b")}))
    assert not custom.is_extra("a", "b") and custom.may_call("a", "b")
    # Extending keeps a custom list's own tiers (not the defaults).
    own = Allowlist(callables=frozenset({("c", "d")}), values=frozenset({("e", "f")})).extended(["g.h"])
    assert (own.callables, own.values, own.extra) == ({("c", "d")}, {("e", "f")}, {("g", "h")})


@pytest.mark.parametrize(
    ("item", "expected"),
    [
        ("argparse.Namespace", ("argparse", "Namespace")),
        ("  os.path.join  ", ("os.path", "join")),
        ("pkg.mod:Outer.Inner", ("pkg.mod", "Outer.Inner")),
        ("a:b", ("a", "b")),
    ],
)
def test_parse_allow_splits_at_the_last_dot_or_the_colon(item, expected):
    assert parse_allow(item) == expected


@pytest.mark.parametrize(
    "item",
    ["", "nodot", ".name", "module.", "a:", ":b", "a b.c", "a.1b", "a:b.2c", "a-b.c", "a:b c", "a:b:c"],
)
def test_parse_allow_refuses_what_is_not_module_dot_name(item):
    with pytest.raises(UsageError, match=r"^--allow takes module.name \(e.g. argparse.Namespace\), got "):
        parse_allow(item)


def test_resolve_name_maps_python_2_names_below_protocol_3_only():
    assert resolve_name(2, "__builtin__", "eval") == ("builtins", "eval")
    assert resolve_name(0, "__builtin__", "xrange") == ("builtins", "range")  # NAME_MAPPING
    assert resolve_name(2, "copy_reg", "_reconstructor") == ("copyreg", "_reconstructor")
    assert resolve_name(3, "__builtin__", "eval") == ("__builtin__", "eval")
    assert resolve_name(3, "__builtin__", "xrange") == ("__builtin__", "xrange")
    assert resolve_name(2, "os", "system") == ("os", "system")
