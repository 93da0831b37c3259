import gzip
import json
import os
import pickle

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from dlsec.core import Access, InputSpec, load_model, save_safetensors_model, sniff_format
from dlsec.core.arch import MLP
from dlsec.errors import ModelLoadError, UnsafeModelFileError

SPEC = InputSpec(shape=(4,), num_classes=3, kind="tabular", mean=(0.5,) * 4, std=(0.25,) * 4)


class _Payload:
    """Pickling this object plants code that would create a marker file when unpickled."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def _mlp():
    torch.manual_seed(0)
    return MLP(in_features=4, num_classes=3, hidden=[8])


def test_safetensors_roundtrip_rebuilds_a_registered_architecture(tmp_path):
    module = _mlp()
    path = save_safetensors_model(
        module,
        SPEC,
        tmp_path / "m.safetensors",
        arch="mlp",
        arch_kwargs={"in_features": 4, "num_classes": 3, "hidden": [8]},
    )
    model = load_model(path, device="cpu")
    assert model.access is Access.WHITE_BOX and model.spec == SPEC
    x = torch.rand(6, 4)
    expected = module((x - 0.5) / 0.25)
    torch.testing.assert_close(model(x), expected)
    assert sniff_format(path) == "safetensors"
    again = save_safetensors_model(
        module,
        SPEC,
        tmp_path / "again.safetensors",
        arch="mlp",
        arch_kwargs={"in_features": 4, "num_classes": 3, "hidden": [8]},
    )
    assert again.read_bytes() == path.read_bytes()  # same weights, same bytes


def test_explicit_module_factory_arch_and_spec_hint(tmp_path):
    module = _mlp()
    path = tmp_path / "plain.safetensors"
    save_file(module.state_dict(), str(path))  # no dlsec metadata at all
    with pytest.raises(ModelLoadError, match="does not name its architecture"):
        load_model(path)
    model = load_model(
        path,
        arch="dlsec.core.arch:MLP",
        arch_kwargs={"in_features": 4, "num_classes": 3, "hidden": [8]},
        spec_hint=InputSpec(shape=(4,), num_classes=3, kind="tabular"),
        device="cpu",
    )
    x = torch.rand(3, 4)
    torch.testing.assert_close(model(x), module(x))


def test_file_naming_unregistered_code_is_not_imported(tmp_path):
    path = tmp_path / "evil.safetensors"
    meta = {"arch": "os:system", "arch_kwargs": {"command": "true"}, "spec": SPEC.to_dict()}
    save_file(_mlp().state_dict(), str(path), metadata={"dlsec": json.dumps(meta)})
    with pytest.raises(ModelLoadError, match="does not import code named by a file"):
        load_model(path)


def test_weights_that_do_not_fit_are_refused(tmp_path):
    path = save_safetensors_model(
        _mlp(),
        SPEC,
        tmp_path / "m.safetensors",
        arch="mlp",
        arch_kwargs={"in_features": 4, "num_classes": 3, "hidden": [8]},
    )
    with pytest.raises(ModelLoadError, match="do not fit"):
        load_model(path, arch="mlp", arch_kwargs={"in_features": 4, "num_classes": 3, "hidden": [16]})
    with pytest.raises(ModelLoadError, match="unknown architecture"):
        load_model(path, arch="resnet-9000")


def _write_pickle_variants(tmp_path, marker):
    payload = _Payload(marker)
    variants = {}
    for proto in (0, 2, 4, 5):
        p = tmp_path / f"proto{proto}.bin"
        p.write_bytes(pickle.dumps(payload, protocol=proto))
        variants[p] = "pickle"
    p = tmp_path / "ckpt.pt"
    torch.save({"model": payload}, p)
    variants[p] = "torch-zip"
    p = tmp_path / "legacy.pth"
    torch.save({"model": payload}, p, _use_new_zipfile_serialization=False)
    variants[p] = "pickle"
    p = tmp_path / "model.joblib.gz"
    p.write_bytes(gzip.compress(pickle.dumps(payload)))
    variants[p] = "compressed"
    p = tmp_path / "objects.npy"
    np.save(p, np.array([payload, 1], dtype=object), allow_pickle=True)
    variants[p] = "numpy-object"
    # A pickle disguised with the safe extension.
    p = tmp_path / "disguised.safetensors"
    p.write_bytes(pickle.dumps(payload, protocol=2))
    variants[p] = "pickle"
    return variants


def test_pickle_family_files_are_refused_and_never_executed(tmp_path):
    marker = tmp_path / "PWNED"
    for path, fmt in _write_pickle_variants(tmp_path, marker).items():
        assert sniff_format(path) == fmt, path.name
        with pytest.raises(UnsafeModelFileError, match="dlsec scan"):
            load_model(path, arch="mlp")
    assert not marker.exists()


def test_unknown_and_empty_files_fail_closed(tmp_path):
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(os.urandom(64) + b"\x00" * 16)
    empty = tmp_path / "empty.onnx"
    empty.write_bytes(b"")
    for path in (junk, empty):
        with pytest.raises(ModelLoadError, match="unrecognised model format"):
            load_model(path)
    # A safetensors header pointing past the end of the file.
    bad = tmp_path / "trunc.safetensors"
    header = json.dumps({"w": {"dtype": "F32", "shape": [100], "data_offsets": [0, 400]}}).encode()
    bad.write_bytes(len(header).to_bytes(8, "little") + header + b"\x00" * 8)
    with pytest.raises(ModelLoadError, match="not a valid safetensors"):
        load_model(bad, arch="mlp")


def _linear_onnx(path, weight, bias, *, softmax=False):
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper, numpy_helper

    nodes = [helper.make_node("Gemm", ["x", "W", "b"], ["logits"], transB=1)]
    out = "logits"
    if softmax:
        nodes.append(helper.make_node("Softmax", ["logits"], ["probs"], axis=1))
        out = "probs"
    graph = helper.make_graph(
        nodes,
        "linear",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", weight.shape[1]])],
        [helper.make_tensor_value_info(out, TensorProto.FLOAT, ["N", weight.shape[0]])],
        initializer=[numpy_helper.from_array(weight, "W"), numpy_helper.from_array(bias, "b")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path


@pytest.mark.parametrize("softmax", [False, True])
def test_onnx_models_are_score_based_and_match_the_closed_form(tmp_path, softmax):
    rng = np.random.default_rng(0)
    weight = rng.normal(size=(3, 4)).astype(np.float32)
    bias = rng.normal(size=3).astype(np.float32)
    path = _linear_onnx(tmp_path / "m.onnx", weight, bias, softmax=softmax)
    assert sniff_format(path) == "onnx"
    spec = InputSpec(shape=(4,), num_classes=3, kind="tabular")
    model = load_model(path, spec_hint=spec, onnx_output="probs" if softmax else "logits")
    assert model.access is Access.SCORE
    x = rng.random((7, 4)).astype(np.float32)
    expected = torch.softmax(torch.from_numpy(x @ weight.T + bias), dim=1)
    torch.testing.assert_close(model.probs(x), expected, atol=1e-5, rtol=1e-5)


def test_onnx_shape_mismatch_is_reported(tmp_path):
    path = _linear_onnx(tmp_path / "m.onnx", np.ones((3, 4), np.float32), np.zeros(3, np.float32))
    with pytest.raises(ModelLoadError, match="shape"):
        load_model(path, spec_hint=InputSpec(shape=(5,), num_classes=3, kind="tabular"))
    with pytest.raises(ModelLoadError, match="classes"):
        load_model(path, spec_hint=InputSpec(shape=(4,), num_classes=2, kind="tabular"))


def test_gateway_urls_and_missing_files_are_clear_errors(tmp_path, monkeypatch):
    monkeypatch.delenv("DLSEC_API_KEY", raising=False)
    with pytest.raises(ModelLoadError, match="DLSEC_API_KEY"):
        load_model("https://gateway.example/v1/models/m")
    with pytest.raises(ModelLoadError, match="HOST:PORT/v1/models/NAME"):
        load_model("https://gateway.example/m")
    with pytest.raises(ModelLoadError, match="not found"):
        load_model(tmp_path / "nope.safetensors")


def test_loading_goes_through_the_scanner_gate(tmp_path):
    from dlsec.scan import detect_format

    path = save_safetensors_model(
        _mlp(),
        SPEC,
        tmp_path / "m.safetensors",
        arch="mlp",
        arch_kwargs={"in_features": 4, "num_classes": 3, "hidden": [8]},
    )
    assert sniff_format(path) == detect_format(path) == "safetensors"
    # Trailing bytes after the last tensor: the safetensors library accepts them, the gate does not.
    padded = tmp_path / "padded.safetensors"
    padded.write_bytes(path.read_bytes() + b"\x00" * 16)
    with pytest.raises(ModelLoadError, match="trailing bytes"):
        load_model(padded)
    # A pickle of protocol 0 disguised as ONNX is refused by content.
    marker = tmp_path / "PWNED"
    disguised = tmp_path / "model.onnx"
    disguised.write_bytes(pickle.dumps(_Payload(marker), protocol=0))
    assert sniff_format(disguised) == "pickle"
    with pytest.raises(UnsafeModelFileError, match="dlsec scan"):
        load_model(disguised)
    assert not marker.exists()


def test_onnx_whose_external_data_leaves_its_folder_is_refused(tmp_path):
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper, numpy_helper

    graph = helper.make_graph(
        [helper.make_node("Gemm", ["x", "W", "b"], ["logits"], transB=1)],
        "linear",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 3])],
        initializer=[
            numpy_helper.from_array(np.ones((3, 4), np.float32), "W"),
            numpy_helper.from_array(np.zeros(3, np.float32), "b"),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    path = tmp_path / "m.onnx"
    onnx.save_model(model, str(path), save_as_external_data=True, location="weights.bin", size_threshold=0)
    spec = InputSpec(shape=(4,), num_classes=3, kind="tabular")
    assert load_model(path, spec_hint=spec).spec.num_classes == 3
    path.write_bytes(path.read_bytes().replace(b"weights.bin", b"/etc/passwd"))
    with pytest.raises(UnsafeModelFileError, match="leaves the model folder"):
        load_model(path, spec_hint=spec)
