"""Safe loading and conversion: only after a safe scan, with the same allowlist, never torch.load."""

from __future__ import annotations

import hashlib
import io
import pickle
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from dlsec.errors import UnsafeFileError, UnscannableFileError, UsageError
from dlsec.scan import DEFAULT_ALLOWLIST, convert_to_safetensors, load_checkpoint
from dlsec.scan._load import _AllowlistUnpickler
from tests.scan.corpus import BYPASSES, call, shell, torch_zip, write_payload


@pytest.fixture(autouse=True)
def _no_torch_load(monkeypatch: pytest.MonkeyPatch) -> None:
    """dlsec must never fall back to torch.load."""

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("torch.load was called")

    monkeypatch.setattr(torch, "load", refuse)


def _net() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.BatchNorm1d(8), torch.nn.Linear(8, 3))


def _bits(t: torch.Tensor) -> torch.Tensor:
    # float8 has no equality kernel on the CPU: compare the bytes
    return t.contiguous().view(torch.uint8) if t.dtype.is_floating_point and t.element_size() == 1 else t


def _assert_same(a: object, b: object) -> None:
    if isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor) and a.dtype == b.dtype and a.shape == b.shape
        assert torch.equal(_bits(a), _bits(b))
    elif isinstance(a, dict):
        assert isinstance(b, dict) and list(a) == list(b)
        for k in a:
            _assert_same(a[k], b[k])
    elif isinstance(a, list | tuple):
        assert type(a) is type(b) and len(a) == len(b)
        for x, y in zip(a, b, strict=True):
            _assert_same(x, y)
    elif isinstance(a, np.ndarray):
        np.testing.assert_array_equal(a, b)
    else:
        assert a == b


@pytest.mark.parametrize("legacy", [False, True])
def test_load_checkpoint_rebuilds_what_torch_save_wrote(tmp_path: Path, legacy: bool) -> None:
    net = _net()
    opt = torch.optim.Adam(net.parameters())
    net(torch.rand(4, 4)).sum().backward()
    opt.step()
    dtypes = [
        "float32",
        "float64",
        "float16",
        "bfloat16",
        "int8",
        "int16",
        "int32",
        "int64",
        "uint8",
        "bool",
        "complex64",
    ]
    if not legacy:
        dtypes += ["uint16", "uint32", "uint64", "float8_e4m3fn", "float8_e5m2"]
    base = torch.arange(10.0)
    ckpt = {
        "model": net.state_dict(),
        "optimizer": opt.state_dict(),
        "epoch": 3,
        "config": {"lr": 0.1, "name": "x", "flags": [True, None]},
        "dtypes": {d: torch.arange(3).to(getattr(torch, d)) for d in dtypes},
        "view": base[2:5],
        "param": torch.nn.Parameter(torch.ones(2)),
        "np": np.arange(3.0),
    }
    path = tmp_path / "ckpt.pt"
    torch.save(ckpt, path, _use_new_zipfile_serialization=not legacy)
    loaded = load_checkpoint(path)
    _assert_same(ckpt, loaded)
    assert isinstance(loaded["param"], torch.nn.Parameter)


def test_convert_flattens_to_safetensors(tmp_path: Path) -> None:
    net = _net()
    src = tmp_path / "ckpt.pt"
    torch.save({"model": net.state_dict(), "epoch": 2, "shared": [torch.ones(3)] * 2}, src)
    out = tmp_path / "model.safetensors"
    result = convert_to_safetensors(src, out)
    tensors = load_file(str(out))
    assert set(tensors) == {f"model.{k}" for k in net.state_dict()} | {"shared.0", "shared.1"}
    assert result.tensors == len(tensors) and result.skipped == ["epoch"] and result.format == "torch-zip"
    selected = convert_to_safetensors(src, tmp_path / "sel.safetensors", select="model")
    assert set(load_file(selected.output)) == set(net.state_dict())
    for key, value in net.state_dict().items():
        assert torch.equal(load_file(selected.output)[key], value)
    with pytest.raises(UsageError, match="exists"):
        convert_to_safetensors(src, out)
    with pytest.raises(UsageError, match="no key"):
        convert_to_safetensors(src, tmp_path / "x.safetensors", select="nope")


@pytest.mark.parametrize("maker", ["npz", "npy", "legacy", "pickle_numpy"])
def test_convert_other_formats(tmp_path: Path, maker: str) -> None:
    # Distinct values, several dtypes, a transposed (non-contiguous) view and a shared storage:
    # the converted tensors must equal the source bit for bit, with their names, shapes and dtypes.
    src = tmp_path / f"src.{maker}"
    base = torch.arange(12, dtype=torch.float32).reshape(3, 4) / 7
    expected: dict[str, torch.Tensor]
    if maker == "npz":
        expected = {
            "a": torch.from_numpy(np.linspace(-1, 1, 6, dtype=np.float32).reshape(2, 3)),
            "b": torch.arange(5, dtype=torch.int64) - 2,
            "c": torch.tensor([0.5, -2.25], dtype=torch.float16),
        }
        with open(src, "wb") as f:
            np.savez(f, **{k: v.numpy() for k, v in expected.items()})
    elif maker == "npy":
        expected = {"tensor": torch.arange(6.0, dtype=torch.float64).reshape(2, 3) ** 2 - 3}
        with open(src, "wb") as f:
            np.save(f, expected["tensor"].numpy())
    elif maker == "legacy":
        expected = {
            "w": base,
            "wt": base.t(),
            "row": base[1],
            "i": torch.tensor([3, -1, 7], dtype=torch.int32),
        }
        torch.save(expected, src, _use_new_zipfile_serialization=False)
    else:
        arrays = {"w": np.arange(6, dtype=np.float32).reshape(2, 3) / 3, "n": np.array([-4, 9], np.int16)}
        src.write_bytes(pickle.dumps(arrays, protocol=4))
        expected = {k: torch.from_numpy(v) for k, v in arrays.items()}
    out = tmp_path / "out.safetensors"
    result = convert_to_safetensors(src, out)
    assert result.tensors == len(expected) and result.skipped == []
    assert result.sha256 == hashlib.sha256(out.read_bytes()).hexdigest()
    converted = load_file(out)
    assert set(converted) == set(expected)
    for name, want in expected.items():
        got = converted[name]
        assert got.dtype == want.dtype and got.shape == want.shape, name
        assert torch.equal(got, want), name


def test_convert_refuses_malicious_and_unscannable_files(tmp_path: Path) -> None:
    marker = tmp_path / "PWNED"
    out = tmp_path / "out.safetensors"
    for payload in BYPASSES[:12]:
        src = write_payload(payload, tmp_path, marker)
        with pytest.raises((UnsafeFileError, UnscannableFileError)):
            convert_to_safetensors(src, out)
    evil = tmp_path / "evil.pt"
    evil.write_bytes(torch_zip(call("os", "system", shell(marker), protocol=2)))
    with pytest.raises(UnsafeFileError, match="os.system"):
        convert_to_safetensors(evil, out)
    truncated = tmp_path / "trunc.pt"
    good = tmp_path / "good.pt"
    torch.save({"w": torch.ones(3)}, good)
    truncated.write_bytes(good.read_bytes()[:-10])
    with pytest.raises(UnscannableFileError):
        convert_to_safetensors(truncated, out)
    assert not out.exists() and not marker.exists()
    assert not list(tmp_path.glob(".out.safetensors.*"))  # no temporary file left behind


def test_the_unpickler_enforces_the_allowlist_on_its_own(tmp_path: Path) -> None:
    """Second line of defence: even bytes that skipped the scan cannot import off-list globals."""
    marker = tmp_path / "PWNED"
    for proto in (0, 2, 4):
        data = call("os", "system", shell(marker), protocol=proto)
        unpickler = _AllowlistUnpickler(
            io.BytesIO(data), allowlist=DEFAULT_ALLOWLIST, proto=proto, label="t", persistent=None
        )
        with pytest.raises(UnsafeFileError, match="os.system"):
            unpickler.load()
    py2 = b"c__builtin__\neval\n(S'1'\ntR."
    with pytest.raises(UnsafeFileError, match="builtins.eval"):
        _AllowlistUnpickler(
            io.BytesIO(py2), allowlist=DEFAULT_ALLOWLIST, proto=0, label="t", persistent=None
        ).load()
    assert not marker.exists()


def test_allow_reaches_the_loader(tmp_path: Path) -> None:
    import argparse

    src = tmp_path / "args.pt"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.save({"args": argparse.Namespace(lr=0.5), "w": torch.ones(2)}, src)
    with pytest.raises(UnsafeFileError, match="argparse.Namespace"):
        load_checkpoint(src)
    loaded = load_checkpoint(src, allow=["argparse.Namespace"])
    assert loaded["args"].lr == 0.5
