"""Third-party Python warnings during probing are counted and summarised, not printed."""

from __future__ import annotations

import warnings

import numpy as np
from sklearn.linear_model import LogisticRegression

from fmtrain.eval.quiet import WarningLog, captured_warnings


def test_a_real_sklearn_convergence_warning_is_counted_not_shown():
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(40, 5)), np.arange(40) % 2
    with warnings.catch_warnings(record=True) as leaked:
        warnings.simplefilter("always")
        with captured_warnings() as caught:
            for _ in range(3):  # one iteration cannot converge: sklearn warns each time
                LogisticRegression(max_iter=1).fit(x, y)
    assert leaked == []
    assert caught.count == 3 and len(caught.kinds) == 1
    summary = caught.summary()
    assert summary.startswith("3 Python warning(s) of 1 kind(s) while probing, first: ")
    assert "ConvergenceWarning: lbfgs failed to converge" in summary
    assert WarningLog().summary() == ""
