from __future__ import annotations

import numpy as np
import pytest

from dlsec.core import load_dataset
from dlsec.core.corruptions import corrupt, corruptions_for
from dlsec.errors import UsageError


@pytest.mark.parametrize("ref", ["builtin:digits", "builtin:breast-cancer"])
def test_every_corruption_stays_in_bounds_grows_with_severity_and_reproduces(ref):
    data = load_dataset(ref)
    x = data.x[:50]
    names = corruptions_for(data.spec)
    assert names
    for name in names:
        changes = []
        for severity in (1, 3, 5):
            out = corrupt(x, data.spec, name, severity, seed=0)
            assert out.shape == x.shape and out.dtype == np.float32
            data.spec.check_batch(out)
            np.testing.assert_array_equal(out, corrupt(x, data.spec, name, severity, seed=0))
            changes.append(float(np.abs(out - x).mean()))
        assert changes[0] < changes[-1], (name, changes)


def test_wrong_kind_and_severity_are_refused():
    digits = load_dataset("builtin:digits")
    with pytest.raises(UsageError, match="does not apply"):
        corrupt(digits.x[:2], digits.spec, "missing_values", 1)
    with pytest.raises(UsageError, match="severity"):
        corrupt(digits.x[:2], digits.spec, "blur", 6)
    with pytest.raises(UsageError, match="unknown corruption"):
        corrupt(digits.x[:2], digits.spec, "fog", 1)
