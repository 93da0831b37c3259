import numpy as np
import pytest
from PIL import Image

from dlsec.core import load_dataset
from dlsec.errors import DataError


def test_builtin_digits_is_in_unit_range_with_known_shape():
    data = load_dataset("builtin:digits")
    assert data.x.shape == (1797, 1, 8, 8) and data.x.dtype == np.float32
    assert data.x.min() == 0.0 and data.x.max() == 1.0
    assert data.spec.num_classes == 10 and data.spec.kind == "image"
    assert np.bincount(data.y).tolist()[:3] == [178, 182, 177]


def test_builtin_breast_cancer_is_minmax_scaled_per_feature():
    data = load_dataset("builtin:breast-cancer")
    assert data.x.shape == (569, 30) and data.spec.kind == "tabular"
    np.testing.assert_allclose(data.x.min(axis=0), 0.0)
    np.testing.assert_allclose(data.x.max(axis=0), 1.0)
    assert data.spec.class_names == ("malignant", "benign")


def test_split_is_deterministic_stratified_and_disjoint():
    data = load_dataset("builtin:digits")
    a_train, a_test = data.split(seed=3)
    b_train, b_test = data.split(seed=3)
    assert a_test.sha256 == b_test.sha256 and a_train.sha256 == b_train.sha256
    assert len(a_train) + len(a_test) == len(data)
    c_train, c_test = data.split(seed=4)
    assert c_test.sha256 != a_test.sha256
    # Stratified: each class's share of the test split is within one row of 25%.
    counts, test_counts = np.bincount(data.y), np.bincount(a_test.y)
    assert np.all(np.abs(test_counts - counts * 0.25) <= 1)


def test_sha256_changes_with_one_label():
    data = load_dataset("builtin:breast-cancer")
    y = data.y.copy()
    y[0] = 1 - y[0]
    assert type(data)(data.x, y, data.spec, data.name).sha256 != data.sha256


def _npz(tmp_path, **arrays):
    path = tmp_path / "d.npz"
    np.savez(path, **arrays)
    return path


def test_npz_roundtrip_and_uint8_scaling(tmp_path):
    x = np.random.default_rng(0).integers(0, 256, size=(6, 4, 4), dtype=np.uint8)
    data = load_dataset(_npz(tmp_path, x=x, y=np.array([0, 1, 2, 0, 1, 2])))
    assert data.x.shape == (6, 1, 4, 4) and data.spec.num_classes == 3
    np.testing.assert_allclose(data.x[:, 0], x / 255.0, rtol=1e-6)
    out = data.save_npz(tmp_path / "copy.npz")
    assert load_dataset(out).sha256 == data.sha256


@pytest.mark.parametrize(
    "arrays, fragment",
    [
        ({"x": np.zeros((3, 2), np.float32)}, "missing array"),
        ({"x": np.zeros((0, 2), np.float32), "y": np.zeros(0, np.int64)}, "empty"),
        ({"x": np.zeros((3, 2), np.float32), "y": np.zeros(4, np.int64)}, "3 inputs but 4 labels"),
        ({"x": np.array([[0.0, np.nan]]), "y": np.array([0])}, "NaN"),
        ({"x": np.array([[0.0, np.inf]]), "y": np.array([0])}, "NaN or infinite"),
        ({"x": np.array([[0.0, 2.0]]), "y": np.array([0])}, "outside the input bounds"),
        ({"x": np.zeros((2, 2)), "y": np.array([0.5, 1.0])}, "whole numbers"),
        ({"x": np.zeros((2, 2)), "y": np.array([-1, 1])}, "labels must lie"),
        ({"x": np.zeros(3), "y": np.zeros(3, np.int64)}, "shape"),
        ({"x": np.array([["a", "b"]]), "y": np.array([0])}, "real numbers"),
    ],
)
def test_bad_npz_inputs_are_refused_with_a_reason(tmp_path, arrays, fragment):
    with pytest.raises(DataError, match=fragment):
        load_dataset(_npz(tmp_path, **arrays))


def test_npz_with_object_arrays_is_never_unpickled(tmp_path):
    x = np.empty(2, dtype=object)
    x[:] = [{"a": 1}, {"b": 2}]
    with pytest.raises(DataError, match="pickle"):
        load_dataset(_npz(tmp_path, x=x, y=np.array([0, 1])))


def test_corrupt_npz_and_unknown_sources(tmp_path):
    bad = tmp_path / "bad.npz"
    bad.write_bytes(b"PK\x03\x04 not really a zip")
    with pytest.raises(DataError, match="not a readable"):
        load_dataset(bad)
    with pytest.raises(DataError, match="not found"):
        load_dataset(tmp_path / "missing.npz")
    with pytest.raises(DataError, match="unknown dataset scheme"):
        load_dataset("s3://bucket/data.npz")
    with pytest.raises(DataError, match="unknown built-in"):
        load_dataset("builtin:cifar")
    (tmp_path / "x.parquet").write_bytes(b"1")
    with pytest.raises(DataError, match="unsupported dataset format"):
        load_dataset(tmp_path / "x.parquet")


def test_csv_with_string_labels_and_per_feature_bounds(tmp_path):
    path = tmp_path / "t.csv"
    path.write_text("a,b,label\n1,10,cat\n2,30,dog\n3,20,cat\n")
    data = load_dataset(path)
    assert data.spec.class_names == ("cat", "dog")
    assert data.y.tolist() == [0, 1, 0]
    assert data.spec.lower == (1.0, 10.0) and data.spec.upper == (3.0, 30.0)
    assert data.spec.feature_names == ("a", "b")


@pytest.mark.parametrize(
    "text, kwargs, fragment",
    [
        ("", {}, "empty"),
        ("a,label\n", {}, "no rows"),
        ("a,b\n1,2\n", {}, "no label column"),
        ("a,b\n1,2\n", {"label_column": "c"}, "not in the header"),
        ("a,label\n1,0\n2\n", {}, "line 3 has 1 fields"),
        ("a,label\nx,0\n", {}, "not a number"),
        ("a,label\n,0\n", {}, "not a number"),
        ("a,label\nnan,0\n", {}, "NaN"),
    ],
)
def test_bad_csv_inputs_are_refused_with_a_reason(tmp_path, text, kwargs, fragment):
    path = tmp_path / "t.csv"
    path.write_text(text)
    with pytest.raises(DataError, match=fragment):
        load_dataset(path, **kwargs)


def _image(path, value, size=(4, 4), mode="L"):
    Image.new(mode, size, color=value).save(path)


def test_image_folder_one_class_per_subfolder(tmp_path):
    for cls, value in (("cat", 0), ("dog", 255)):
        (tmp_path / cls).mkdir()
        for i in range(2):
            _image(tmp_path / cls / f"{i}.png", value)
    data = load_dataset(tmp_path)
    assert data.x.shape == (4, 1, 4, 4) and data.spec.class_names == ("cat", "dog")
    assert data.y.tolist() == [0, 0, 1, 1]
    assert data.x[0].max() == 0.0 and data.x[3].min() == 1.0


def test_image_folder_bad_inputs(tmp_path):
    (tmp_path / "a").mkdir()
    _image(tmp_path / "a" / "0.png", 0)
    with pytest.raises(DataError, match="one subfolder per class"):
        load_dataset(tmp_path)
    (tmp_path / "b").mkdir()
    with pytest.raises(DataError, match="has no images"):
        load_dataset(tmp_path)
    _image(tmp_path / "b" / "0.png", 0, size=(5, 5))
    with pytest.raises(DataError, match="one size and mode"):
        load_dataset(tmp_path)
    (tmp_path / "b" / "0.png").write_bytes(b"not a png")
    with pytest.raises(DataError, match="not a readable image"):
        load_dataset(tmp_path)
