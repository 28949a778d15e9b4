"""Hypothesis profiles of the fuzz suite: ``fuzz-fast`` (the default, part of ``make test``) and
``fuzz-deep`` (``make fuzz``), chosen by ``HYPOTHESIS_PROFILE=fuzz-deep`` or
``pytest --hypothesis-profile=fuzz-deep``.

The fuzz tests take their settings from :func:`fuzz_settings`, so the deep profile only
deepens this directory; every other test keeps its own explicit settings.
"""

from __future__ import annotations

import os

from hypothesis import HealthCheck, settings

_COMMON = dict(deadline=None, print_blob=True,
               suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                      HealthCheck.filter_too_much, HealthCheck.function_scoped_fixture])
settings.register_profile("fuzz-fast", max_examples=60, **_COMMON)
settings.register_profile("fuzz-deep", max_examples=4000, **_COMMON)


def pytest_configure(config):
    """``--hypothesis-profile=fuzz-deep`` selects the deep profile here too."""
    chosen = config.getoption("hypothesis_profile", default=None)
    if chosen and chosen.startswith("fuzz-"):
        os.environ["HYPOTHESIS_PROFILE"] = chosen
