"""Datasets: the built-in ones, ``.npz``, image folders and CSV files, all validated.

A :class:`Dataset` holds float32 inputs ``x`` of shape ``(N, *spec.shape)`` in input space,
int64 labels ``y`` in ``0..num_classes-1`` and an :class:`~dlsec.core.InputSpec` describing
them. Every loader checks what it reads (shape, dtype, finite values, value range, labels,
emptiness) and raises :class:`~dlsec.errors.DataError` with one line saying what to fix.
Nothing is downloaded: the built-in datasets ship with scikit-learn, or (``builtin:credit-bias``,
for fairness) are generated from a fixed seed.
"""

from __future__ import annotations

import csv
import hashlib
import re
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from dlsec.core.spec import Bound, DataKind, InputSpec
from dlsec.errors import DataError, SpecError

__all__ = ["Dataset", "load_dataset", "BUILTIN_DATASETS"]

_IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp"}
_LABEL_COLUMNS = ("label", "target", "class", "y")
_SCHEME = re.compile(r"^[A-Za-z][\w+.-]+:")  # two or more letters: not a Windows drive


@dataclass(frozen=True)
class Dataset:
    """A labelled dataset in input space.

    Attributes:
        x: float32 array of shape ``(N, *spec.shape)``.
        y: int64 array of shape ``(N,)`` with values in ``0..spec.num_classes-1``.
        spec: the input spec shared with the models trained on it.
        name: where it came from (``builtin:digits``, a path).
    """

    x: np.ndarray
    y: np.ndarray
    spec: InputSpec
    name: str

    def __post_init__(self) -> None:
        validate(self.x, self.y, self.spec, source=self.name)

    def __len__(self) -> int:
        return int(self.y.shape[0])

    @property
    def sha256(self) -> str:
        """SHA-256 over the inputs' and labels' bytes (shape and dtype included)."""
        h = hashlib.sha256()
        for arr in (self.x, self.y):
            h.update(f"{arr.dtype.str}{arr.shape}".encode())
            h.update(np.ascontiguousarray(arr).tobytes())
        return h.hexdigest()

    def subset(self, index: np.ndarray, *, name: str | None = None) -> Dataset:
        """The rows at ``index`` (a copy)."""
        return Dataset(self.x[index].copy(), self.y[index].copy(), self.spec, name or f"{self.name}[subset]")

    def split(self, *, test_size: float = 0.25, seed: int = 0) -> tuple[Dataset, Dataset]:
        """A deterministic stratified train/test split.

        The same ``seed`` and ``test_size`` always give the same rows. Stratification is
        dropped (with the same determinism) when a class has too few rows for it.
        """
        from sklearn.model_selection import train_test_split

        if not 0.0 < test_size < 1.0:
            raise DataError(f"test_size must be between 0 and 1, got {test_size}")
        idx = np.arange(len(self))
        counts = np.bincount(self.y, minlength=self.spec.num_classes)
        n_test = int(np.ceil(test_size * len(self)))
        stratify = self.y if counts[counts > 0].min() >= 2 and n_test >= (counts > 0).sum() else None
        if len(self) < 2 or n_test >= len(self):
            raise DataError(f"{self.name}: {len(self)} rows are too few to split; add data")
        train_idx, test_idx = train_test_split(idx, test_size=test_size, random_state=seed, stratify=stratify)
        return (
            self.subset(np.sort(train_idx), name=f"{self.name}[train]"),
            self.subset(np.sort(test_idx), name=f"{self.name}[test]"),
        )

    def save_npz(self, path: str | Path) -> Path:
        """Write ``x`` and ``y`` to ``path`` atomically (no pickled objects)."""
        from dlsec.fsutil import atomic_write_with

        def write(tmp: Path) -> None:
            with open(tmp, "wb") as f:
                np.savez(f, x=self.x, y=self.y)

        return atomic_write_with(Path(path), write)


def validate(x: np.ndarray, y: np.ndarray, spec: InputSpec, *, source: str) -> None:
    """Raise :class:`DataError` unless ``x``/``y`` form a valid dataset for ``spec``."""
    if not isinstance(x, np.ndarray) or not isinstance(y, np.ndarray):
        raise DataError(f"{source}: x and y must be NumPy arrays")
    if x.dtype != np.float32:
        raise DataError(f"{source}: inputs must be float32 after loading, got {x.dtype}")
    if y.ndim != 1:
        raise DataError(f"{source}: labels must be one-dimensional, got shape {y.shape}")
    if y.dtype != np.int64:
        raise DataError(f"{source}: labels must be int64 after loading, got {y.dtype}")
    if x.shape[0] == 0:
        raise DataError(f"{source}: the dataset is empty; it needs at least one row")
    if x.shape[0] != y.shape[0]:
        raise DataError(f"{source}: {x.shape[0]} inputs but {y.shape[0]} labels")
    if y.min() < 0 or y.max() >= spec.num_classes:
        raise DataError(
            f"{source}: labels must lie in 0..{spec.num_classes - 1}, found {int(y.min())}..{int(y.max())}"
        )
    try:
        spec.check_batch(x, what=source)
    except SpecError as exc:
        raise DataError(str(exc)) from None


# --------------------------------------------------------------------------- built-ins


def _digits() -> Dataset:
    from sklearn.datasets import load_digits

    bunch = load_digits()
    x = (bunch.images.astype(np.float32) / 16.0)[:, None, :, :]
    y = bunch.target.astype(np.int64)
    spec = InputSpec(
        shape=(1, 8, 8), num_classes=10, kind="image", class_names=tuple(str(i) for i in range(10))
    )
    return Dataset(x, y, spec, "builtin:digits")


def _breast_cancer() -> Dataset:
    from sklearn.datasets import load_breast_cancer

    bunch = load_breast_cancer()
    raw = bunch.data.astype(np.float64)
    lo, hi = raw.min(axis=0), raw.max(axis=0)
    # Min-max scaled over the whole (fixed, bundled) table so that budgets read as fractions of
    # each feature's range; the scaling is a constant of the dataset, not learned per split.
    x = ((raw - lo) / np.where(hi > lo, hi - lo, 1.0)).astype(np.float32)
    y = bunch.target.astype(np.int64)
    spec = InputSpec(
        shape=(x.shape[1],),
        num_classes=2,
        kind="tabular",
        class_names=tuple(str(c) for c in bunch.target_names),
        feature_names=tuple(str(f) for f in bunch.feature_names),
    )
    return Dataset(x, y, spec, "builtin:breast-cancer")


#: Known biases injected into ``builtin:credit-bias`` (see :func:`_credit_bias`).
CREDIT_BIAS = {"threshold_shift": 0.25, "margin_ratio": 0.5, "minority_share": 0.3}


def _credit_bias() -> Dataset:
    """A synthetic credit table with a protected ``group`` column and two known, injected biases.

    No dataset with a protected attribute ships inside an installable package (Fairlearn's and
    AIF360's loaders download at run time), so this one is generated: 2,000 rows, seed 0,
    identical on every machine. Each applicant has a latent merit ``m``; ``income``,
    ``savings``, ``history`` rise with it and ``debt`` falls, each with its own noise, scaled to
    [0, 1]. Group 1 (30% of rows, ``minority_share``) carries two biases:

    * **a double standard in the labels**: group 0 was approved when ``m > 0``, group 1 only
      when ``m > 0.25`` (``threshold_shift``), so the labels' approval rates are 0.50 and
      0.31 in expectation (0.49 and 0.28 in this sample) and a model that reads ``group``
      learns to approve group 1 less often;
    * **thin margins**: group 1's merit has half the spread (``margin_ratio``), so its
      applicants sit closer to the decision boundary and a small perturbation flips more of
      them (lower robust accuracy for that group).

    Labels: 0 ``deny``, 1 ``approve``. The ``group`` column is a model input (0 or 1).
    """
    rng = np.random.default_rng(0)
    n = 2000
    group = (rng.random(n) < CREDIT_BIAS["minority_share"]).astype(np.float64)
    merit = rng.normal(0.0, 1.0, n) * np.where(group == 1, CREDIT_BIAS["margin_ratio"], 1.0)
    y = (merit > CREDIT_BIAS["threshold_shift"] * group).astype(np.int64)
    columns = {"group": group}
    for name, weight, noise in (
        ("income", 1.0, 0.3),
        ("savings", 0.8, 0.4),
        ("debt", -0.7, 0.4),
        ("history", 0.6, 0.5),
    ):
        columns[name] = np.clip(0.5 + (weight * merit + rng.normal(0.0, noise, n)) / 6.0, 0.0, 1.0)
    x = np.stack(list(columns.values()), axis=1).astype(np.float32)
    spec = InputSpec(
        shape=(x.shape[1],),
        num_classes=2,
        kind="tabular",
        class_names=("deny", "approve"),
        feature_names=tuple(columns),
    )
    return Dataset(x, y, spec, "builtin:credit-bias")


def _synthetic_cifar() -> Dataset:
    """1,200 generated 3x32x32 images in 10 classes, seed 0 (see :mod:`dlsec.core.synthetic`)."""
    from dlsec.core.synthetic import synthetic_cifar

    return synthetic_cifar()


BUILTIN_DATASETS: dict[str, Callable[[], Dataset]] = {
    "digits": _digits,
    "breast-cancer": _breast_cancer,
    "credit-bias": _credit_bias,
    "synthetic-cifar": _synthetic_cifar,
}


# --------------------------------------------------------------------------- loaders


def load_dataset(
    ref: str | Path, *, label_column: str | None = None, bounds: tuple[float, float] | None = None
) -> Dataset:
    """Load a dataset from a reference.

    Args:
        ref: ``builtin:digits``, ``builtin:breast-cancer``, ``builtin:credit-bias`` (generated,
            with a protected ``group`` column and known biases), ``builtin:synthetic-cifar``
            (generated 3x32x32 images in 10 classes, for the models of real size), a ``.npz`` file with arrays
            ``x`` and ``y``, a folder with one subfolder of images per class, or a ``.csv`` file.
        label_column: CSV only: the label column (default: the first of ``label``,
            ``target``, ``class``, ``y`` present).
        bounds: the value range ``(lower, upper)`` of the inputs. Defaults to ``(0, 1)`` for
            built-ins, ``.npz`` and images, and to each feature's observed range for CSV.

    Raises:
        DataError: the reference cannot be read or the data fail validation.

    Example:
        >>> data = load_dataset("builtin:digits")
        >>> data.x.shape, data.spec.num_classes
        ((1797, 1, 8, 8), 10)
    """
    text = str(ref)
    if text.startswith("builtin:"):
        name = text.removeprefix("builtin:")
        if name not in BUILTIN_DATASETS:
            raise DataError(
                f"unknown built-in dataset {name!r}; choose one of: "
                + ", ".join(f"builtin:{n}" for n in BUILTIN_DATASETS)
            )
        return BUILTIN_DATASETS[name]()
    if _SCHEME.match(text) and not Path(text).exists():
        raise DataError(f"unknown dataset scheme in {text!r}; use builtin:NAME or a file path")
    path = Path(text)
    if not path.exists():
        raise DataError(f"dataset not found: {path}")
    if path.is_dir():
        return _load_image_folder(path, bounds)
    suffix = path.suffix.lower()
    if suffix == ".npz":
        return _load_npz(path, bounds)
    if suffix == ".csv":
        return _load_csv(path, label_column, bounds)
    raise DataError(
        f"{path}: unsupported dataset format {suffix or '(no suffix)'}; "
        "use builtin:NAME, a .npz with x and y, a .csv, or an image folder"
    )


def _to_float_inputs(x: np.ndarray, source: str) -> np.ndarray:
    if x.dtype == np.uint8:
        return x.astype(np.float32) / 255.0
    if x.dtype.kind not in "fiu" or x.dtype.kind == "c":
        raise DataError(f"{source}: x must hold real numbers, got dtype {x.dtype}")
    return x.astype(np.float32)


def _to_labels(y: np.ndarray, source: str) -> np.ndarray:
    if y.dtype.kind == "f":
        if y.size and not np.all(np.isfinite(y)):
            raise DataError(f"{source}: labels contain NaN or infinite values")
        if not np.all(y == np.round(y)):
            raise DataError(f"{source}: labels must be whole numbers (class indices)")
    elif y.dtype.kind not in "iub":
        raise DataError(f"{source}: labels must be integer class indices, got dtype {y.dtype}")
    return y.astype(np.int64)


def _load_npz(path: Path, bounds: tuple[float, float] | None) -> Dataset:
    source = str(path)
    try:
        with np.load(path, allow_pickle=False) as npz:
            missing = [k for k in ("x", "y") if k not in npz.files]
            if missing:
                raise DataError(
                    f"{source}: missing array(s) {missing}; save with np.savez(path, x=..., y=...)"
                )
            x_raw, y_raw = npz["x"], npz["y"]
    except DataError:
        raise
    except ValueError as exc:
        if "pickle" in str(exc).lower() or "object" in str(exc).lower():
            raise DataError(
                f"{source}: holds object arrays, which need pickle; dlsec never "
                "unpickles data: save numeric arrays instead"
            ) from None
        raise DataError(f"{source}: not a readable .npz file ({exc})") from None
    except (OSError, zipfile.BadZipFile, EOFError) as exc:
        raise DataError(f"{source}: not a readable .npz file ({exc})") from None
    if x_raw.ndim < 2:
        raise DataError(f"{source}: x must have shape (N, features) or (N, [C,] H, W), got {x_raw.shape}")
    if x_raw.ndim > 4:
        raise DataError(f"{source}: x has {x_raw.ndim} dimensions; at most 4 (N, C, H, W) are supported")
    x = _to_float_inputs(x_raw, source)
    y = _to_labels(np.asarray(y_raw).reshape(-1) if y_raw.ndim == 1 else y_raw, source)
    if x.ndim == 3:
        x = x[:, None, :, :]
    kind: DataKind = "tabular" if x.ndim == 2 else "image"
    if y.ndim != 1:
        raise DataError(f"{source}: y must be one label per row, got shape {y.shape}")
    if y.size == 0 or x.shape[0] == 0:
        raise DataError(f"{source}: the dataset is empty; it needs at least one row")
    lo, hi = bounds if bounds is not None else (0.0, 1.0)
    num_classes = max(int(y.max()) + 1, 2)
    spec = _spec(x.shape[1:], num_classes, lo, hi, kind, source)
    return Dataset(np.ascontiguousarray(x), y, spec, source)


def _spec(
    shape: tuple[int, ...],
    num_classes: int,
    lower: Bound,
    upper: Bound,
    kind: DataKind,
    source: str,
    **extra: Any,
) -> InputSpec:
    try:
        return InputSpec(
            shape=tuple(shape), num_classes=num_classes, lower=lower, upper=upper, kind=kind, **extra
        )
    except SpecError as exc:
        raise DataError(f"{source}: {exc}") from None


def _load_csv(path: Path, label_column: str | None, bounds: tuple[float, float] | None) -> Dataset:
    source = str(path)
    try:
        with open(path, newline="", encoding="utf-8") as f:
            rows = list(csv.reader(f))
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise DataError(f"{source}: cannot read CSV ({exc})") from None
    rows = [r for r in rows if any(cell.strip() for cell in r)]
    if not rows:
        raise DataError(f"{source}: the file is empty; it needs a header and rows")
    header = [h.strip() for h in rows[0]]
    body = rows[1:]
    if not body:
        raise DataError(f"{source}: the dataset is empty; it has a header but no rows")
    if label_column is None:
        found = [c for c in _LABEL_COLUMNS if c in header]
        if not found:
            raise DataError(
                f"{source}: no label column; name one with --label-column "
                f"(columns: {', '.join(header[:8])}{'...' if len(header) > 8 else ''})"
            )
        label_column = found[0]
    if label_column not in header:
        raise DataError(f"{source}: label column {label_column!r} not in the header")
    if len(header) < 2:
        raise DataError(f"{source}: needs at least one feature column besides the label")
    li = header.index(label_column)
    features = [h for i, h in enumerate(header) if i != li]
    x = np.empty((len(body), len(features)), dtype=np.float64)
    labels: list[str] = []
    for r, row in enumerate(body, start=2):
        if len(row) != len(header):
            raise DataError(f"{source}: line {r} has {len(row)} fields, the header has {len(header)}")
        labels.append(row[li].strip())
        values = [cell for i, cell in enumerate(row) if i != li]
        for c, cell in enumerate(values):
            try:
                x[r - 2, c] = float(cell)
            except ValueError:
                raise DataError(
                    f"{source}: line {r}, column {features[c]!r}: {cell!r} is not a number; "
                    "encode categorical features as numbers first"
                ) from None
    if not np.all(np.isfinite(x)):
        bad = int(np.argwhere(~np.isfinite(x))[0][0]) + 2
        raise DataError(f"{source}: line {bad} has a missing, NaN or infinite value; impute it first")
    classes, y = _encode_labels(labels)
    lower: Bound
    upper: Bound
    if bounds is not None:
        lower, upper = bounds
    else:
        lo, hi = x.min(axis=0), x.max(axis=0)
        upper_arr = np.where(hi > lo, hi, lo + 1.0)
        lower, upper = tuple(lo.tolist()), tuple(upper_arr.tolist())
    spec = _spec(
        (len(features),),
        max(len(classes), 2),
        lower,
        upper,
        "tabular",
        source,
        class_names=tuple(classes) if len(classes) >= 2 else None,
        feature_names=tuple(features),
    )
    return Dataset(x.astype(np.float32), y, spec, source)


def _encode_labels(labels: list[str]) -> tuple[list[str], np.ndarray]:
    try:
        ints = [int(v) for v in labels]
    except ValueError:
        classes = sorted(set(labels))
        index = {c: i for i, c in enumerate(classes)}
        return classes, np.array([index[v] for v in labels], dtype=np.int64)
    if min(ints) < 0:
        raise DataError("CSV labels that are integers must be class indices >= 0")
    n = max(ints) + 1
    return [str(i) for i in range(n)], np.array(ints, dtype=np.int64)


def _load_image_folder(path: Path, bounds: tuple[float, float] | None) -> Dataset:
    from PIL import Image, UnidentifiedImageError

    source = str(path)
    class_dirs = sorted(p for p in path.iterdir() if p.is_dir() and not p.name.startswith("."))
    if len(class_dirs) < 2:
        raise DataError(
            f"{source}: an image folder needs one subfolder per class (at least 2), found {len(class_dirs)}"
        )
    arrays: list[np.ndarray] = []
    labels: list[int] = []
    first: tuple[str, tuple[int, int]] | None = None
    for label, folder in enumerate(class_dirs):
        files = sorted(p for p in folder.iterdir() if p.suffix.lower() in _IMAGE_SUFFIXES)
        if not files:
            raise DataError(f"{source}: class folder {folder.name!r} has no images")
        for file in files:
            try:
                with Image.open(file) as img:
                    img.load()
                    mode = "L" if img.mode in ("1", "L", "LA", "I", "I;16", "F") else "RGB"
                    converted = img.convert(mode)
                    size = converted.size
                    arr = np.asarray(converted, dtype=np.uint8)
            except (UnidentifiedImageError, OSError, ValueError) as exc:
                raise DataError(f"{file}: not a readable image ({exc})") from None
            if first is None:
                first = (mode, size)
            elif (mode, size) != first:
                raise DataError(
                    f"{file}: is {mode} {size[0]}x{size[1]} but the first image is "
                    f"{first[0]} {first[1][0]}x{first[1][1]}; convert all images to one size and mode"
                )
            arrays.append(arr[None] if arr.ndim == 2 else arr.transpose(2, 0, 1))
            labels.append(label)
    x = np.stack(arrays).astype(np.float32) / 255.0
    lo, hi = bounds if bounds is not None else (0.0, 1.0)
    spec = _spec(
        x.shape[1:], len(class_dirs), lo, hi, "image", source, class_names=tuple(p.name for p in class_dirs)
    )
    return Dataset(x, np.array(labels, dtype=np.int64), spec, source)


def with_spec(data: Dataset, spec: InputSpec) -> Dataset:
    """The same rows described by another spec (e.g. a model's), validated against it."""
    if spec.shape != data.spec.shape:
        raise DataError(f"{data.name}: examples have shape {data.spec.shape}, the model expects {spec.shape}")
    return replace(data, spec=spec)
