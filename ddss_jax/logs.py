"""Console logging shared by the entry points."""

import logging as py_logging

from absl import logging


def _hide_orbax_info(record: py_logging.LogRecord) -> bool:
  """orbax logs a dozen INFO lines per checkpoint; keep its warnings and errors only."""
  return record.levelno >= py_logging.WARNING or "/orbax/" not in record.pathname


def quiet_library_logs() -> None:
  """Call once from an entry point's main(), after absl has set up its handler."""
  logging.get_absl_handler().addFilter(_hide_orbax_info)
