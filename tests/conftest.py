"""Test configuration: hypothesis profiles and the import path of test helpers.

Profiles (select with ``HYPOTHESIS_PROFILE``):

* ``ci`` (the default): deterministic, sized so the whole suite draws well over
  200 examples and runs in a few minutes on 2 CPU cores;
* ``soak``: 2,500 examples per property test (10,000 across the four property
  tests), for occasional long runs (see
  docs/testing.md for the command and the last result);
* ``dev``: few examples, for quick local iterations.
"""
from __future__ import annotations

import os
import sys

import torch
from hypothesis import HealthCheck, settings

sys.path.insert(0, os.path.dirname(__file__))

_common = dict(deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
settings.register_profile("ci", max_examples=100, derandomize=True, print_blob=True, **_common)
settings.register_profile("soak", max_examples=2_500, derandomize=False, print_blob=True, **_common)
settings.register_profile("dev", max_examples=10, **_common)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))

torch.set_num_threads(1)
