"""Hypothesis settings for the fuzz tests: a bounded example budget in CI (`HYPOTHESIS_PROFILE=ci`, the
default), more with `HYPOTHESIS_PROFILE=deep`. Derandomised in CI: a failure reproduces on rerun."""

import os

from hypothesis import HealthCheck, settings

settings.register_profile("ci", max_examples=150, deadline=None, derandomize=True,
                          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
settings.register_profile("deep", max_examples=3000, deadline=None,
                          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))
