"""Corpus files for the formats beside pickles that ModelAudit reads: built byte by byte.

Each builder writes the layout its format's writer produces (field numbers from the formats'
schemas: TensorFlow Lite ``schema.fbs``, ExecuTorch ``program.fbs``, Core ML ``Model.proto``,
Paddle ``framework.proto``, TensorFlow ``meta_graph.proto``, CNTK ``CNTK.proto``; MXNet's
``NDArray::Save`` layout and symbol JSON; Flax's msgpack extension types; PMML 4.4 and OpenVINO
IR v11 XML). Files written by the libraries themselves are in ``tests/scan/fixtures/``.
``FORMAT_CASES`` join the corpus table (``tests/scan/corpus.py``); ``format_benign_files``
writes honest files of each format, which must scan ``safe``; ``UNVETTED`` lists files whose
code is named but not in the file, which must be ``unscannable`` with kind ``unvetted``.
"""

from __future__ import annotations

import io
import json
import struct
import zipfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import flatbuffers

# -- FlatBuffers -------------------------------------------------------------------------------


def _fb_vector(b: flatbuffers.Builder, offsets: list[int]) -> int:
    b.StartVector(4, len(offsets), 4)
    for off in reversed(offsets):
        b.PrependUOffsetTRelative(off)
    return int(b.EndVector())


def tflite(
    custom: list[str], builtin: tuple[int, ...] = (0, 9), big_buffer: tuple[int, int] | None = None
) -> bytes:
    """A TFLite model whose one subgraph runs each builtin op (ADD=0, FULLY_CONNECTED=9) and custom op."""
    b = flatbuffers.Builder(0)
    codes = []
    for name in custom:
        s = b.CreateString(name)
        b.StartObject(4)
        b.PrependUOffsetTRelativeSlot(1, s, 0)
        b.PrependInt8Slot(0, 32, 0)
        b.PrependInt32Slot(3, 32, 0)
        codes.append(b.EndObject())
    for op in builtin:
        b.StartObject(4)
        b.PrependInt8Slot(0, op, -128)
        b.PrependInt32Slot(3, op, -(1 << 31))
        b.PrependInt32Slot(2, 1, 0)
        codes.append(b.EndObject())
    ops = []
    for i in range(len(codes)):
        b.StartObject(6)
        b.PrependUint32Slot(0, i, 1 << 31)
        ops.append(b.EndObject())
    ops_vec = _fb_vector(b, ops)
    name = b.CreateString("main")
    b.StartObject(5)
    b.PrependUOffsetTRelativeSlot(3, ops_vec, 0)
    b.PrependUOffsetTRelativeSlot(4, name, 0)
    graph = b.EndObject()
    data = b.CreateByteVector(bytes(range(16)))
    buffers = []
    b.StartObject(3)
    buffers.append(b.EndObject())
    b.StartObject(3)
    b.PrependUOffsetTRelativeSlot(0, data, 0)
    buffers.append(b.EndObject())
    if big_buffer is not None:
        b.StartObject(3)
        b.PrependUint64Slot(1, big_buffer[0], 0)
        b.PrependUint64Slot(2, big_buffer[1], 0)
        buffers.append(b.EndObject())
    codes_vec, graphs_vec, buffers_vec = _fb_vector(b, codes), _fb_vector(b, [graph]), _fb_vector(b, buffers)
    desc = b.CreateString("dlsec test model")
    b.StartObject(8)
    b.PrependUint32Slot(0, 3, 0)
    b.PrependUOffsetTRelativeSlot(1, codes_vec, 0)
    b.PrependUOffsetTRelativeSlot(2, graphs_vec, 0)
    b.PrependUOffsetTRelativeSlot(3, desc, 0)
    b.PrependUOffsetTRelativeSlot(4, buffers_vec, 0)
    b.Finish(b.EndObject(), file_identifier=b"TFL3")
    return bytes(b.Output())


def executorch(operators: list[str], delegates: tuple[str, ...] = ()) -> bytes:
    """An ExecuTorch program: one ``forward`` plan naming ``operators`` and ``delegates``."""
    b = flatbuffers.Builder(0)
    ops = []
    for op in operators:
        name, overload = b.CreateString(op), b.CreateString("out")
        b.StartObject(2)
        b.PrependUOffsetTRelativeSlot(0, name, 0)
        b.PrependUOffsetTRelativeSlot(1, overload, 0)
        ops.append(b.EndObject())
    dels = []
    for backend in delegates:
        ident = b.CreateString(backend)
        b.StartObject(3)
        b.PrependUOffsetTRelativeSlot(0, ident, 0)
        dels.append(b.EndObject())
    ops_vec, dels_vec = _fb_vector(b, ops), _fb_vector(b, dels)
    plan_name = b.CreateString("forward")
    b.StartObject(9)
    b.PrependUOffsetTRelativeSlot(0, plan_name, 0)
    b.PrependUOffsetTRelativeSlot(6, ops_vec, 0)
    b.PrependUOffsetTRelativeSlot(7, dels_vec, 0)
    plan = b.EndObject()
    plans = _fb_vector(b, [plan])
    b.StartObject(7)
    b.PrependUint32Slot(0, 0, 1)
    b.PrependUOffsetTRelativeSlot(1, plans, 0)
    b.Finish(b.EndObject(), file_identifier=b"ET12")
    return bytes(b.Output())


def catboost() -> bytes:
    b = flatbuffers.Builder(0)
    version = b.CreateString("FlabuffersModel_v1")
    b.StartObject(4)
    b.PrependUOffsetTRelativeSlot(0, version, 0)
    b.Finish(b.EndObject())
    core = bytes(b.Output())
    return b"CBM1" + struct.pack("<I", len(core)) + core


# -- msgpack (Flax) ----------------------------------------------------------------------------


class Ext:
    def __init__(self, code: int, data: bytes) -> None:
        self.code, self.data = code, data


def packb(value: Any) -> bytes:
    """A small msgpack packer (what ``msgpack.packb`` writes for these types)."""
    if value is None:
        return b"\xc0"
    if value is True or value is False:
        return b"\xc3" if value else b"\xc2"
    if isinstance(value, int):
        if 0 <= value < 128:
            return bytes([value])
        return b"\xd3" + struct.pack(">q", value)
    if isinstance(value, str):
        data = value.encode()
        return (bytes([0xA0 | len(data)]) if len(data) < 32 else b"\xd9" + bytes([len(data)])) + data
    if isinstance(value, bytes):
        return b"\xc6" + struct.pack(">I", len(value)) + value
    if isinstance(value, (list, tuple)):
        return bytes([0x90 | len(value)]) + b"".join(packb(v) for v in value)
    if isinstance(value, dict):
        return bytes([0x80 | len(value)]) + b"".join(packb(k) + packb(v) for k, v in value.items())
    if isinstance(value, Ext):
        return b"\xc7" + bytes([len(value.data)]) + struct.pack("b", value.code) + value.data
    raise TypeError(type(value))


def flax_array(shape: tuple[int, ...], dtype: str = "float32", itemsize: int = 4) -> Ext:
    n = 1
    for d in shape:
        n *= d
    return Ext(1, packb([list(shape), dtype, b"\x00" * (n * itemsize)]))


def flax_checkpoint(extra: dict[str, Any] | None = None) -> bytes:
    state = {
        "params": {"Dense_0": {"kernel": flax_array((3, 2)), "bias": flax_array((2,))}},
        "step": 7,
        "opt_state": [{"count": Ext(3, packb(["int32", b"\x07\x00\x00\x00"]))}],
    }
    state.update(extra or {})
    return packb(state)


# -- protobuf ----------------------------------------------------------------------------------


def _varint(n: int) -> bytes:
    n &= (1 << 64) - 1
    out = bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def pb(field: int, value: bytes | int) -> bytes:
    if isinstance(value, int):
        return _varint(field << 3) + _varint(value)
    return _varint(field << 3 | 2) + _varint(len(value)) + value


def coreml(model_type: int, body: bytes) -> bytes:
    description = pb(1, pb(1, b"input")) + pb(10, pb(1, b"output"))
    return pb(1, 4) + pb(2, description) + pb(model_type, body)


def coreml_layer(name: str, params: bytes) -> bytes:
    return pb(1, pb(1, name.encode()) + pb(2, b"input") + pb(3, b"output") + params)


def _coreml_nn() -> bytes:
    inner_product = pb(140, pb(1, 2) + pb(2, 3))  # InnerProductLayerParams: dims only
    return coreml(500, coreml_layer("dense", inner_product))


def paddle_program(ops: list[str]) -> bytes:
    op_descs = b"".join(pb(4, pb(3, op.encode())) for op in ops)
    block = pb(1, 0) + pb(2, -1) + op_descs
    return pb(1, block) + pb(4, pb(1, 0))


def pdiparams(dims: tuple[int, ...] = (2, 3)) -> bytes:
    desc = pb(1, 5) + b"".join(pb(2, d) for d in dims)
    n = 1
    for d in dims:
        n *= d
    return struct.pack("<IQIi", 0, 0, 0, len(desc)) + desc + b"\x00" * (4 * n)


def metagraph(
    graph_ops: list[str], function_ops: tuple[str, ...] = (), assets: tuple[str, ...] = ()
) -> bytes:
    """A ``.meta`` file: one ``MetaGraphDef`` (tags, a graph of ``graph_ops``, a library function
    running ``function_ops``, asset files) as ``tf.compat.v1.train.export_meta_graph`` lays it out."""
    nodes = b"".join(pb(1, pb(1, f"n{i}".encode()) + pb(2, op.encode())) for i, op in enumerate(graph_ops))
    body = b"".join(pb(3, pb(1, f"f{i}".encode()) + pb(2, op.encode())) for i, op in enumerate(function_ops))
    library = pb(2, pb(1, pb(1, pb(1, b"__inference_call")) + body)) if function_ops else b""
    info = pb(1, pb(4, b"serve") + pb(5, b"2.21.0"))
    asset_defs = b"".join(
        pb(6, pb(1, pb(1, f"asset{i}:0".encode())) + pb(2, a.encode())) for i, a in enumerate(assets)
    )
    saver = pb(3, pb(1, b"save/Const:0") + pb(2, b"save/control_dependency:0") + pb(3, b"save/restore_all"))
    return info + pb(2, nodes + library + pb(4, pb(1, 1808))) + saver + asset_defs


def keras_metadata(layers: list[tuple[str, dict[str, Any]]]) -> bytes:
    """A Keras 2 SavedModel's ``keras_metadata.pb``: one ``SavedObject`` node per layer (JSON metadata)."""
    nodes = b""
    for i, (class_name, config) in enumerate(layers):
        meta = json.dumps({"name": config.get("name", f"l{i}"), "class_name": class_name, "config": config})
        node = (
            pb(2, i + 1)
            + pb(3, f"root.layer-{i}".encode())
            + pb(4, b"_tf_keras_layer")
            + pb(5, meta.encode())
        )
        nodes += pb(1, node + pb(6, pb(1, 2) + pb(2, 1)))
    return nodes


KERAS_LAMBDA = {
    "name": "lambda",
    "function": {
        "class_name": "__lambda__",
        "config": {"code": "4wEAAAAAAAAAAAAAAAEAAAADAAAA8wYAAAB8AFMAKQFO", "defaults": None},
    },
    "function_type": "lambda",
}

METAGRAPH_BENIGN = [
    "Placeholder",
    "VariableV2",
    "Const",
    "MatMul",
    "Softmax",
    "SaveV2",
    "RestoreV2",
    "Identity",
]

# -- MXNet -------------------------------------------------------------------------------------


def mxnet_symbol(
    ops: Sequence[tuple[str, dict[str, str]]], subgraph: Sequence[tuple[str, dict[str, str]]] = ()
) -> bytes:
    """A symbol JSON as ``Symbol.save`` writes it: ``data``, then one node per op, chained."""
    nodes: list[dict[str, Any]] = [{"op": "null", "name": "data", "inputs": []}]
    for i, (op, attrs) in enumerate(ops):
        nodes.append({"op": "null", "name": f"w{i}", "inputs": []})
        node: dict[str, Any] = {
            "op": op,
            "name": f"op{i}",
            "attrs": attrs,
            "inputs": [[len(nodes) - 2, 0, 0]],
        }
        nodes.append(node)
    if subgraph:
        inner = json.loads(mxnet_symbol(list(subgraph)))
        nodes.append(
            {
                "op": "_foreach",
                "name": "loop",
                "attrs": {"num_args": "1"},
                "inputs": [[0, 0, 0]],
                "subgraphs": [inner],
            }
        )
    doc = {
        "nodes": nodes,
        "arg_nodes": [i for i, n in enumerate(nodes) if n["op"] == "null"],
        "node_row_ptr": list(range(len(nodes) + 1)),
        "heads": [[len(nodes) - 1, 0, 0]],
        "attrs": {"mxnet_version": ["int", 10901]},
    }
    return json.dumps(doc, indent=2).encode()


MXNET_MLP = [
    ("FullyConnected", {"num_hidden": "8"}),
    ("Activation", {"act_type": "relu"}),
    ("BatchNorm", {"eps": "1e-05"}),
    ("FullyConnected", {"num_hidden": "2"}),
]


def mxnet_params(arrays: dict[str, tuple[tuple[int, ...], int]], *, extra: bytes = b"") -> bytes:
    """An ``NDArray::Save`` list of dense float arrays: ``name -> (shape, dtype flag)``."""
    sizes = {0: 4, 1: 8, 2: 2, 3: 1, 4: 4, 6: 8}
    out = struct.pack("<QQQ", 0x112, 0, len(arrays))
    for shape, dtype in arrays.values():
        n = 1
        for d in shape:
            n *= d
        out += struct.pack("<Iii", 0xF993FAC9, 0, len(shape)) + struct.pack(f"<{len(shape)}q", *shape)
        out += struct.pack("<iii", 1, 0, dtype) + b"\x00" * (n * sizes[dtype])
    out += struct.pack("<Q", len(arrays))
    for name in arrays:
        out += struct.pack("<Q", len(name.encode())) + name.encode()
    return out + extra


MXNET_MLP_PARAMS = {
    "arg:op0_weight": ((8, 4), 0),
    "arg:op0_bias": ((8,), 0),
    "aux:op2_moving_mean": ((8,), 0),
}

# -- CNTK --------------------------------------------------------------------------------------


def _cntk_value(v: Any) -> bytes:
    """A ``DictionaryValue``: bool, size_t, string, NDShape (tuple), Vector (list), dict, NDArrayView."""
    if isinstance(v, bool):
        return pb(1, 1) + pb(2, 1) + pb(3, int(v))
    if isinstance(v, int):
        return pb(1, 1) + pb(2, 3) + pb(5, v)
    if isinstance(v, str):
        return pb(1, 1) + pb(2, 6) + pb(8, v.encode())
    if isinstance(v, tuple):
        return pb(1, 1) + pb(2, 7) + pb(9, _cntk_shape(v))
    if isinstance(v, list):
        return pb(1, 1) + pb(2, 9) + pb(11, b"".join(pb(1, _cntk_value(x)) for x in v))
    if isinstance(v, dict):
        return pb(1, 1) + pb(2, 10) + pb(12, cntk_dictionary(v))
    if isinstance(v, CntkArray):
        return pb(1, 1) + pb(2, 11) + pb(13, v.proto())
    raise TypeError(type(v))


def _cntk_shape(dims: tuple[int, ...]) -> bytes:
    return pb(1, b"".join(_varint(d) for d in dims))


class CntkArray:
    """A dense float ``NDArrayView`` of ``shape`` (``values`` overrides how many floats it holds)."""

    def __init__(self, shape: tuple[int, ...], values: int | None = None) -> None:
        self.shape = shape
        n = 1
        for d in shape:
            n *= d
        self.values = n if values is None else values

    def proto(self) -> bytes:
        data = struct.pack(f"<{self.values}f", *([0.5] * self.values))
        return pb(1, 1) + pb(3, _cntk_shape(self.shape)) + pb(4, pb(1, data))


def cntk_dictionary(d: dict[str, Any]) -> bytes:
    return pb(1, 1) + b"".join(pb(2, pb(1, k.encode()) + pb(2, _cntk_value(v))) for k, v in d.items())


def _cntk_variable(
    uid: str, kind: int, shape: tuple[int, ...], value: CntkArray | None = None
) -> dict[str, Any]:
    var: dict[str, Any] = {
        "version": 1,
        "type": "Variable",
        "uid": uid,
        "kind": kind,
        "data_type": 1,
        "is_sparse": False,
        "name": uid.lower(),
        "needs_gradient": kind == 3,
        "shape": shape,
        "dynamic_axis": [],
    }
    if value is not None:
        var["value"] = value
    return var


def cntk_model(extra_functions: Sequence[dict[str, Any]] = (), weights: CntkArray | None = None) -> bytes:
    """A CNTK v2 ``Function.save`` of ``times(W, x) + b``, plus ``extra_functions``."""
    functions: list[dict[str, Any]] = [
        {
            "version": 1,
            "type": "PrimitiveFunction",
            "op": 13,
            "uid": "Times6",
            "name": "",
            "inputs": ["Parameter4", "Input3"],
            "attributes": {"outputRank": 1, "inferInputRankToMap": 0},
        },
        {
            "version": 1,
            "type": "PrimitiveFunction",
            "op": 8,
            "uid": "Plus7",
            "name": "z",
            "inputs": ["Times6_Output_0", "Parameter5"],
            "attributes": {},
        },
        *extra_functions,
    ]
    model = {
        "version": 1,
        "type": "CompositeFunction",
        "uid": "CompositeFunction8",
        "name": "",
        "root": functions[-1]["uid"],
        "inputs": [
            _cntk_variable("Input3", 0, (3,)),
            _cntk_variable("Parameter4", 3, (2, 3), weights if weights is not None else CntkArray((2, 3))),
            _cntk_variable("Parameter5", 3, (2,), CntkArray((2,))),
        ],
        "primitive_functions": functions,
    }
    return cntk_dictionary(model)


def cntk_udf(state: dict[str, Any]) -> dict[str, Any]:
    return {
        "version": 1,
        "type": "UserDefinedFunction",
        "uid": "UserFunction9",
        "name": "hook",
        "inputs": ["Plus7_Output_0"],
        "user_defined_state": state,
    }


# -- XML ---------------------------------------------------------------------------------------

_PMML_BODY = """<Header copyright="dlsec"><Application name="SkLearn2PMML" version="0.110"/></Header>
<DataDictionary numberOfFields="2"><DataField name="x" optype="continuous" dataType="double"/>
<DataField name="y" optype="continuous" dataType="double"/></DataDictionary>
<RegressionModel functionName="regression"><MiningSchema><MiningField name="y" usageType="target"/>
<MiningField name="x"/></MiningSchema><RegressionTable intercept="0.5">
<NumericPredictor name="x" coefficient="2.0"/></RegressionTable></RegressionModel>"""


def pmml(extension: str = "", doctype: str = "") -> bytes:
    return (
        f'<?xml version="1.0" encoding="UTF-8"?>\n{doctype}<PMML xmlns="http://www.dmg.org/PMML-4_4" '
        f'version="4.4"><Extension name="repr" value="PMMLPipeline(steps=[])"/>{extension}{_PMML_BODY}</PMML>'
    ).encode()


def openvino_ir(
    layer_type: str = "Add", version: str = "opset1", extra_attrs: str = "", size: int = 24
) -> bytes:
    return f"""<?xml version="1.0"?>
<net name="model" version="11">
  <layers>
    <layer id="0" name="x" type="Parameter" version="opset1"><data shape="2,3" element_type="f32"/>
      <output><port id="0" precision="FP32"><dim>2</dim><dim>3</dim></port></output></layer>
    <layer id="1" name="w" type="Const" version="opset1">
      <data element_type="f32" shape="2,3" offset="0" size="{size}"/>
      <output><port id="0" precision="FP32"><dim>2</dim><dim>3</dim></port></output></layer>
    <layer id="2" name="op" type="{layer_type}" version="{version}"{extra_attrs}>
      <input><port id="0"/><port id="1"/></input><output><port id="2" precision="FP32"/></output></layer>
    <layer id="3" name="out" type="Result" version="opset1"><input><port id="0"/></input></layer>
  </layers>
  <edges><edge from-layer="0" from-port="0" to-layer="2" to-port="0"/>
    <edge from-layer="1" from-port="0" to-layer="2" to-port="1"/>
    <edge from-layer="2" from-port="2" to-layer="3" to-port="0"/></edges>
</net>
""".encode()


# -- tree models and skops ---------------------------------------------------------------------

_XGB = {
    "learner": {
        "attributes": {},
        "feature_names": [],
        "gradient_booster": {"name": "gbtree", "model": {"trees": [{"split_indices": [0, 0, 0]}]}},
        "learner_model_param": {"base_score": "5E-1", "num_class": "0", "num_feature": "2"},
        "objective": {"name": "reg:squarederror"},
    },
    "version": [2, 1, 0],
}


def ubjson(value: Any) -> bytes:
    """UBJSON as XGBoost writes it (typed float arrays, int32/int64 lengths)."""
    if isinstance(value, dict):
        out = b"{"
        for k, v in value.items():
            key = k.encode()
            out += b"L" + struct.pack(">q", len(key)) + key + ubjson(v)
        return out + b"}"
    if isinstance(value, list):
        if value and all(isinstance(v, int) for v in value):
            return b"[$l#L" + struct.pack(">q", len(value)) + b"".join(struct.pack(">i", v) for v in value)
        return b"[" + b"".join(ubjson(v) for v in value) + b"]"
    if isinstance(value, str):
        data = value.encode()
        return b"SL" + struct.pack(">q", len(data)) + data
    if isinstance(value, int):
        return b"l" + struct.pack(">i", value)
    raise TypeError(type(value))


def xgboost_ubj() -> bytes:
    return b"{" + b"U\x07learner" + ubjson(_XGB["learner"])[0:] + b"U\x07version" + ubjson([2, 1, 0]) + b"}"


LIGHTGBM = b"""tree
version=v4
num_class=1
num_tree_per_iteration=1
label_index=0
max_feature_idx=1
objective=regression
feature_names=x y
tree_sizes=300

Tree=0
num_leaves=2
split_feature=0
threshold=0.5
leaf_value=0.1 0.2

end of trees

parameters:
[boosting: gbdt]
end of parameters
"""


def _npy(data: bytes = b"\x00" * 8) -> bytes:
    header = "{'descr': '<f8', 'fortran_order': False, 'shape': (1,), }"
    text = (header + " " * (64 - (10 + len(header) + 1) % 64) + "\n").encode("latin1")
    return b"\x93NUMPY\x01\x00" + struct.pack("<H", len(text)) + text + data


def skops(extra: dict[str, Any] | None = None) -> bytes:
    schema: dict[str, Any] = {
        "__class__": "LogisticRegression",
        "__module__": "sklearn.linear_model._logistic",
        "__loader__": "ObjectNode",
        "__id__": 1,
        "content": {
            "__class__": "dict",
            "__module__": "builtins",
            "__loader__": "DictNode",
            "__id__": 2,
            "content": {
                "C": {
                    "__class__": "float",
                    "__module__": "builtins",
                    "__loader__": "JsonNode",
                    "content": "1.0",
                },
                "coef_": {
                    "__class__": "ndarray",
                    "__module__": "numpy",
                    "__loader__": "NdArrayNode",
                    "type": "numpy",
                    "file": "3.npy",
                },
                **(extra or {}),
            },
        },
        "protocol": 2,
        "_skops_version": "0.10.0",
    }
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("schema.json", json.dumps(schema))
        zf.writestr("3.npy", _npy())
    return buf.getvalue()


# -- the table ---------------------------------------------------------------------------------


def _corpus() -> Any:
    import tests.scan.corpus as corpus  # the pickle assembler; imported late (it imports this table)

    return corpus


def _b(data: Callable[[], bytes]) -> Callable[[Path], bytes]:
    return lambda _m: data()


def _flax_pickle(m: Path) -> bytes:
    c = _corpus()
    return flax_checkpoint({"metadata": c.call("os", "system", c.shell(m), protocol=2)})


def _hidden_pickle(m: Path) -> bytes:
    c = _corpus()
    return c.torch_zip(
        b"\x80\x02}q\x00.", extra={"archive/data/extra.bin": c.call("os", "system", c.shell(m))}
    )


def _name_mismatch(m: Path) -> bytes:
    c = _corpus()
    data = c.zip_of({"archive/data.pkl": c.call("os", "system", c.shell(m))})
    return data.replace(b"archive/data.pkl", b"archive/data.pkX", 1)


def _flag_bits(m: Path) -> bytes:
    c = _corpus()
    return c.set_zip_flag_encrypted(c.torch_zip(c.call("subprocess", "call", ["sh", "-c", c.shell(m)])))


def _sevenzip_traversal(_m: Path) -> bytes:
    import py7zr

    buf = io.BytesIO()
    with py7zr.SevenZipFile(buf, "w") as z:
        # py7zr's writestr refuses such names; its _writestr skips that check, as an attacker's writer would
        z._writestr(b"touch /tmp/x\n", "../../.bashrc")  # noqa: SLF001
    return buf.getvalue()


_XXE = '<!DOCTYPE PMML [<!ENTITY xxe SYSTEM "file:///etc/passwd">]>\n'
_LAUGHS = '<!DOCTYPE PMML [<!ENTITY a "lol"><!ENTITY b "&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;">]>\n'
_SKOPS_GH = "https://github.com/skops-dev/skops/security/advisories/"

# (name, source, build(marker), expected import or finding code, suffix): Payloads in corpus.py
FORMAT_CASES: list[tuple[str, str, Callable[[Path], bytes], str, str]] = [
    (
        "tflite_flex_readfile",
        "TensorFlow Lite Select TF ops: a Flex custom op running ReadFile",
        _b(lambda: tflite(["FlexReadFile"])),
        "tf.raw_ops.ReadFile",
        ".tflite",
    ),
    (
        "tflite_flex_writefile",
        "TensorFlow Lite Select TF ops: a Flex custom op running WriteFile",
        _b(lambda: tflite(["FlexWriteFile", "FlexMatMul"])),
        "tf.raw_ops.WriteFile",
        ".tflite",
    ),
    (
        "tflite_buffer_past_end",
        "TensorFlow Lite buffer stored past the FlatBuffer (offset/size beyond the file)",
        _b(lambda: tflite([], big_buffer=(1 << 20, 64))),
        "buffer-out-of-bounds",
        ".tflite",
    ),
    (
        "flax_msgpack_embedded_pickle",
        "Flax msgpack checkpoint carrying a pickle as a binary value",
        _flax_pickle,
        "os.system",
        ".msgpack",
    ),
    (
        "flax_msgpack_object_dtype",
        "Flax msgpack ndarray extension with an object dtype",
        _b(lambda: flax_checkpoint({"w": Ext(1, packb([[1], "|O", b"\x80\x04N."]))})),
        "msgpack-object-dtype",
        ".msgpack",
    ),
    (
        "flax_msgpack_custom_ext_type",
        "msgpack extension type decoded by a custom ext_hook",
        _b(lambda: flax_checkpoint({"hook": Ext(42, b"os.system")})),
        "msgpack-ext-type",
        ".msgpack",
    ),
    (
        "pmml_xxe_external_entity",
        "PMML with an external entity (XXE, CWE-611)",
        _b(lambda: pmml(doctype=_XXE)),
        "xml-external-entity",
        ".pmml",
    ),
    (
        "pmml_billion_laughs",
        "PMML with nested internal entities (billion laughs, CWE-776)",
        _b(lambda: pmml(doctype=_LAUGHS)),
        "xml-entity-expansion",
        ".pmml",
    ),
    (
        "pmml_extension_python",
        "PMML Extension element holding Python code",
        _b(lambda: pmml('<Extension name="init"><![CDATA[import os; os.system("touch x")]]></Extension>')),
        "pmml-extension-code",
        ".pmml",
    ),
    (
        "openvino_python_layer",
        "OpenVINO IR layer of type Python",
        _b(lambda: openvino_ir("Python", "extension")),
        "openvino-custom-layer",
        ".xml",
    ),
    (
        "openvino_extension_library",
        "OpenVINO IR layer naming a shared library to load",
        _b(lambda: openvino_ir("Add", "opset1", ' library="/tmp/libevil.so"')),
        "openvino-extension-library",
        ".xml",
    ),
    (
        "coreml_linked_model_traversal",
        "Core ML linkedModel whose file name climbs out of the bundle",
        _b(lambda: coreml(556, pb(1, pb(1, pb(1, b"../../../../tmp/evil.mlmodelc"))))),
        "linked-model-path",
        ".mlmodel",
    ),
    (
        "paddle_py_func",
        "PaddlePaddle program with a py_func op",
        _b(lambda: paddle_program(["feed", "py_func", "fetch"])),
        "paddle.ops.py_func",
        ".pdmodel",
    ),
    (
        "paddle_save_op",
        "PaddlePaddle program with a save op (writes a file)",
        _b(lambda: paddle_program(["feed", "scale", "save", "fetch"])),
        "paddle.ops.save",
        ".pdmodel",
    ),
    (
        "skops_operator_func_node_cve_2025_54412",
        _SKOPS_GH + " (CVE-2025-54412: OperatorFuncNode)",
        _b(
            lambda: skops(
                {
                    "f": {
                        "__class__": "methodcaller",
                        "__module__": "operator",
                        "__loader__": "OperatorFuncNode",
                        "content": {"attrs": ["system", "touch x"]},
                    }
                }
            )
        ),
        "skops-call-node",
        ".skops",
    ),
    (
        "skops_method_node_cve_2025_54413",
        _SKOPS_GH + " (CVE-2025-54413: MethodNode)",
        _b(
            lambda: skops(
                {
                    "f": {
                        "__class__": "method",
                        "__module__": "builtins",
                        "__loader__": "MethodNode",
                        "content": {"func": "system", "obj": {"__class__": "module", "__module__": "os"}},
                    }
                }
            )
        ),
        "skops-call-node",
        ".skops",
    ),
    (
        "skops_function_node_os_system",
        "skops FunctionNode naming os.system (a function trusted by name)",
        _b(
            lambda: skops(
                {
                    "func": {
                        "__class__": "function",
                        "__module__": "os",
                        "__loader__": "FunctionNode",
                        "content": {"module_path": "os", "function": "system"},
                    }
                }
            )
        ),
        "os.system",
        ".skops",
    ),
    (
        "llamafile_native_executable",
        "a llamafile (Actually Portable Executable with GGUF weights): native code",
        _b(lambda: b"MZqFpD='\n\n" + b"\x00" * 64 + b"GGUF"),
        "native-executable",
        ".llamafile",
    ),
    (
        "sevenzip_member_path_traversal",
        "7z archive member named ../../ (path traversal on extraction)",
        _sevenzip_traversal,
        "member-path",
        ".7z",
    ),
    (
        "picklescan_hidden_pickle_cve_2025_1889",
        "https://nvd.nist.gov/vuln/detail/CVE-2025-1889 (a pickle under a non-pickle member name)",
        _hidden_pickle,
        "os.system",
        ".pt",
    ),
    (
        "picklescan_zip_name_mismatch_cve_2025_1944",
        "https://nvd.nist.gov/vuln/detail/CVE-2025-1944 (local header and central directory names differ)",
        _name_mismatch,
        "os.system",
        ".pt",
    ),
    (
        "picklescan_zip_flag_bits_cve_2025_1945",
        "https://nvd.nist.gov/vuln/detail/CVE-2025-1945 (general-purpose flag bits set on a stored member)",
        _flag_bits,
        "subprocess.call",
        ".pt",
    ),
]

FORMAT_CASES += [
    (
        "tf_metagraph_pyfunc",
        "TensorFlow MetaGraph (.meta) whose graph runs PyFunc",
        _b(lambda: metagraph([*METAGRAPH_BENIGN, "PyFunc"])),
        "tf.raw_ops.PyFunc",
        ".meta",
    ),
    (
        "tf_metagraph_library_writefile",
        "TensorFlow MetaGraph whose library function runs WriteFile",
        _b(lambda: metagraph(METAGRAPH_BENIGN, ("Const", "WriteFile"))),
        "tf.raw_ops.WriteFile",
        ".meta",
    ),
    (
        "tf_metagraph_data_service",
        "TensorFlow MetaGraph reading from a tf.data service at an address in the graph",
        _b(lambda: metagraph([*METAGRAPH_BENIGN, "DataServiceDatasetV4"])),
        "tf.raw_ops.DataServiceDatasetV4",
        ".meta",
    ),
    (
        "tf_metagraph_asset_traversal",
        "TensorFlow MetaGraph asset file named ../ (read from outside the assets folder)",
        _b(lambda: metagraph(METAGRAPH_BENIGN, assets=("vocab.txt", "../../../../etc/passwd"))),
        "tf-asset-path",
        ".meta",
    ),
    (
        "keras2_savedmodel_lambda",
        "Keras 2 SavedModel keras_metadata.pb with a Lambda layer (marshalled bytecode, no safe_mode)",
        _b(lambda: keras_metadata([("Dense", {"name": "dense", "units": 2}), ("Lambda", KERAS_LAMBDA)])),
        "keras-lambda",
        ".pb",
    ),
    (
        "mxnet_custom_python_op",
        "MXNet symbol with a Custom op (runs the Python CustomOpProp registered under op_type)",
        _b(lambda: mxnet_symbol([*MXNET_MLP, ("Custom", {"op_type": "evil_op"})])),
        "mxnet.op.Custom.evil_op",
        "-symbol.json",
    ),
    (
        "mxnet_custom_op_in_subgraph",
        "MXNet symbol with a Custom op inside a _foreach subgraph",
        _b(lambda: mxnet_symbol(MXNET_MLP, subgraph=[("Custom", {"op_type": "evil_op"})])),
        "mxnet.op.Custom.evil_op",
        "-symbol.json",
    ),
    (
        "mxnet_cvimread_file",
        "MXNet symbol with _cvimread (reads the file named in its attributes)",
        _b(lambda: mxnet_symbol([("_cvimread", {"filename": "/etc/shadow"}), *MXNET_MLP])),
        "mxnet.op._cvimread",
        "-symbol.json",
    ),
    (
        "mxnet_op_name_redos_cve_2022_24294",
        "https://nvd.nist.gov/vuln/detail/CVE-2022-24294 (MXNet op name that backtracks the loader's regex)",
        _b(lambda: mxnet_symbol([*MXNET_MLP, ("(" * 64 + "a+" * 600 + ")" * 64 + "!", {})])),
        "mxnet-op-name",
        "-symbol.json",
    ),
    (
        "mxnet_params_shape_past_end",
        "MXNet .params array whose shape needs 2**40 floats (NDArray::Load allocates it before reading)",
        _b(
            lambda: mxnet_params(MXNET_MLP_PARAMS).replace(
                (8).to_bytes(8, "little"), (1 << 40).to_bytes(8, "little"), 1
            )
        ),
        "tensor-out-of-bounds",
        "-0000.params",
    ),
    (
        "cntk_python_user_function",
        "CNTK v2 model with a Python UserFunction (Function.load imports its module and class)",
        _b(
            lambda: cntk_model(
                [cntk_udf({"class": "Backdoor", "module": "evil_pkg.ops", "op_name": "Hook", "state": {}})]
            )
        ),
        "evil_pkg.ops.Backdoor",
        ".model",
    ),
    (
        "cntk_native_user_function",
        "CNTK v2 model with a native user function (loads a library and calls its factory)",
        _b(
            lambda: cntk_model(
                [
                    cntk_udf(
                        {
                            "type": "NativeUserDefinedFunction",
                            "module": "/tmp/libevil.so",
                            "deserialize_method": "CreateEvil",
                            "op": "EvilOp",
                            "user_defined_state": {},
                        }
                    )
                ]
            )
        ),
        "/tmp/libevil.so:CreateEvil",
        ".model",
    ),
    (
        "cntk_user_function_by_callback",
        "CNTK v2 user-defined function rebuilt by a deserializer registered in the loading process",
        _b(lambda: cntk_model([cntk_udf({"op_name": "Hook", "state": {"k": 1}})])),
        "cntk-user-function",
        ".model",
    ),
]

_SSTI = "{{ cycler.__init__.__globals__.os.popen('touch MARKER').read() }}"
_CVE_SSTI = "https://nvd.nist.gov/vuln/detail/CVE-2024-34359"
FORMAT_CASES += [
    (
        "hf_tokenizer_config_chat_template_ssti",
        f"{_CVE_SSTI} class in a Hugging Face tokenizer_config.json chat_template (the template "
        "apply_chat_template renders; ModelAudit's jinja2_template scanner reads these too)",
        lambda m: json.dumps({"chat_template": _SSTI.replace("MARKER", str(m))}).encode(),
        "template-injection",
        ".json",
    ),
    (
        "hf_named_chat_templates_ssti",
        f"{_CVE_SSTI} class hidden in the second of a tokenizer's named chat templates (tool_use)",
        lambda m: json.dumps(
            {
                "chat_template": [
                    {"name": "default", "template": "{{ messages[0]['content'] }}"},
                    {"name": "tool_use", "template": "{{ (cycler|attr('__in' ~ 'it__')) }}"},
                ]
            }
        ).encode(),
        "template-injection",
        ".json",
    ),
    (
        "hf_chat_template_jinja_ssti",
        f"{_CVE_SSTI} class in transformers' chat_template.jinja, the file it saves templates to",
        lambda m: _SSTI.replace("MARKER", str(m)).encode(),
        "template-injection",
        ".jinja",
    ),
]

# Code dlsec names but cannot see: unscannable, kind unvetted (path suffix, builder).
UNVETTED: dict[str, tuple[str, Callable[[], bytes]]] = {
    "tflite_custom_op": (".tflite", lambda: tflite(["MyCustomKernel"])),
    "executorch_custom_op": (".pte", lambda: executorch(["aten::add", "my_ns::evil_kernel"])),
    "executorch_unknown_delegate": (".pte", lambda: executorch(["aten::add"], ("SomeVendorBackend",))),
    "coreml_custom_layer": (
        ".mlmodel",
        lambda: coreml(500, coreml_layer("c", pb(500, pb(10, b"EvilLayer")))),
    ),
    "coreml_custom_model": (".mlmodel", lambda: coreml(555, pb(10, b"EvilModel"))),
    "openvino_extension_opset": (".xml", lambda: openvino_ir("MyOp", "custom_opset")),
    "tensorrt_engine": (".engine", lambda: b"ftrt" + b"\x00" * 60),
    "r_rds_cve_2024_27322": (".rds", lambda: b"X\n\x00\x00\x00\x03\x00\x04\x04\x00" + b"\x00" * 32),
    "torch7": (".t7", lambda: b"\x04\x00\x00\x00\x01\x00\x00\x00\x03\x00\x00\x00V 1" + b"\x00" * 16),
    "tf_metagraph_custom_op": (".meta", lambda: metagraph([*METAGRAPH_BENIGN, "MyVendorKernel"])),
    "tf_savedmodel_custom_op": (
        ".pb",
        lambda: _corpus().saved_model(METAGRAPH_BENIGN, ["Const", "Addons>Foo"]),
    ),
    "mxnet_library_op": ("-symbol.json", lambda: mxnet_symbol([*MXNET_MLP, ("my_gemm", {})])),
}


# The shape of the templates tokenizers ship (loops, conditions, raise_exception, filters).
CHAT_TEMPLATE = (
    "{% for message in messages %}{% if message['role'] not in ['user', 'assistant'] %}"
    "{{ raise_exception('unknown role') }}{% endif %}"
    "{{ '<|' + message['role'] + '|>\\n' + message['content'] | trim + eos_token }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|assistant|>\\n' }}{% endif %}"
)


def format_benign_files(folder: Path) -> list[Path]:
    """Honest files of each format, which must scan safe."""
    folder.mkdir(parents=True, exist_ok=True)
    files: dict[str, bytes] = {
        "model.tflite": tflite(["TFLite_Detection_PostProcess", "FlexMatMul"]),
        "model.pte": executorch(["aten::add", "aten::mm"], ("XnnpackBackend",)),
        "model.cbm": catboost(),
        "flax_params.msgpack": flax_checkpoint(),
        "model.pmml": pmml(),
        "model.xml": openvino_ir(),
        "model.bin": b"\x00" * 24,
        "model.mlmodel": _coreml_nn(),
        "inference.pdmodel": paddle_program(["feed", "matmul_v2", "elementwise_add", "fetch"]),
        "inference.pdiparams": pdiparams(),
        "xgb_model.json": json.dumps(_XGB).encode(),
        "xgb_model.ubj": xgboost_ubj(),
        "lgbm_model.txt": LIGHTGBM,
        "model.skops": skops(),
        "model.ckpt.meta": metagraph(METAGRAPH_BENIGN, ("Identity", "MatMul")),
        "mlp-symbol.json": mxnet_symbol(MXNET_MLP),
        "mlp-0000.params": mxnet_params(MXNET_MLP_PARAMS),
        "model.cntk": cntk_model(),
        "keras_metadata.pb": keras_metadata(
            [("InputLayer", {"name": "x"}), ("Dense", {"name": "dense", "units": 2})]
        ),
        "tokenizer_config.json": json.dumps({"chat_template": CHAT_TEMPLATE, "eos_token": "</s>"}).encode(),
        "chat_template.jinja": CHAT_TEMPLATE.encode(),
    }
    out = []
    for name, data in files.items():
        path = folder / name
        path.write_bytes(data)
        out.append(path)
    return out
