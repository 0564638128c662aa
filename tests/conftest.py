"""Test set-up shared by every test file: the repository root on sys.path, and a check that a
test skipping for a missing reference library is marked parity (no fixtures)."""

import os
import re
import sys

import pytest

# The repository root on sys.path makes `configs` importable as in `python -m ddss_jax.main`.
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# The reference libraries of the parity tests, as their skip reasons name them.
_REFERENCE = re.compile(r"\b(torch|diffusers|pytorch[-_]fid)\b")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):  # pylint: disable=unused-argument
  """A test that skips for a missing reference library must be marked parity: CI runs the parity
  tests on their own (`-m parity`) once the references are installed, so an unmarked one would
  never run there."""
  outcome = yield
  report = outcome.get_result()
  if not report.skipped or item.get_closest_marker("parity") is not None:
    return
  reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
  if _REFERENCE.search(reason):
    report.outcome = "failed"
    report.longrepr = (f"{item.nodeid} skipped for a reference library ({reason}) but is not "
                       "marked @pytest.mark.parity")
