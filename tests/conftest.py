"""Test set-up shared by every test file: the repository root on sys.path (no fixtures)."""

import os
import sys

# The repository root on sys.path makes `configs` importable as in `python -m ddss_jax.main`.
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
