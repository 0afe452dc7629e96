"""Test-wide settings. Under CI (CI set in the environment) hypothesis draws a fixed sequence of
examples, so a run is reproducible; locally it explores new ones each time."""

import os

from hypothesis import settings

settings.register_profile("ci", derandomize=True, print_blob=True)
if os.environ.get("CI"):
    settings.load_profile("ci")
