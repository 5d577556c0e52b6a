"""The method runs train and evaluate: they use the evaluate tests' tiny run with an eval split."""

from tests.evaluate.conftest import eval_run  # noqa: F401 (a fixture, found by name)
