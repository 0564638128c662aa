"""Test set-up shared by every test file: the repository root on sys.path, one persistent XLA
compilation cache for the session, and a check that a test skipping for a missing reference
library is marked parity (no fixtures)."""

import os
import re
import shutil
import sys
import tempfile

import pytest

# The repository root on sys.path makes `configs` importable as in `python -m ddss_jax.main`.
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# Most tests build the same small programs again (new closures, so jit's in-memory cache misses)
# and compiling them, not running them, is most of their time: a tiny 2-D run took 12 s cold
# and 2 s with its five programs that compile for over a second (JAX's threshold) cached. JAX
# reads these variables when it is first imported, here or in a test's subprocess, which
# inherits them, as do the pytest-xdist workers, started after this module runs in the
# controller. An entry is keyed on the program, the jax/XLA versions and the devices, and holds
# the executable a fresh compile makes; a size limit turns on JAX's file lock (the filelock
# package, in the test extra; without it JAX refuses to compile), so the workers share it
# safely. A cache the user set is used as it is; this one lives for the session.
_OWN_CACHE = None
if "JAX_COMPILATION_CACHE_DIR" not in os.environ:
  _OWN_CACHE = tempfile.mkdtemp(prefix="ddss_jax_tests_xla_cache_")
  os.environ.update(JAX_COMPILATION_CACHE_DIR=_OWN_CACHE,
                    JAX_COMPILATION_CACHE_MAX_SIZE=str(8 << 30))


def pytest_unconfigure(config):  # pylint: disable=unused-argument
  if _OWN_CACHE is not None:
    shutil.rmtree(_OWN_CACHE, ignore_errors=True)

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
