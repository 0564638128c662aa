"""The errors a run raises for input it cannot use: a bad config value, missing files."""

from __future__ import annotations

from typing import Any


class ConfigError(ValueError):
  """A config value that cannot run: names the field (config.<group>.<key>), the value and what
  is valid. Raised before anything compiles."""

  def __init__(self, field: str, value: Any, expected: str):
    self.field = field
    super().__init__(f"config.{field}={value!r}: {expected}")


class MissingInputs(ConfigError, FileNotFoundError):
  """Files or datasets the config needs that are absent: one message listing each and how to
  provide it. A ConfigError and a FileNotFoundError."""

  def __init__(self, field: str, value: Any, missing: list[str]):
    self.field = field
    ValueError.__init__(self, f"config.{field}={value!r} cannot start; missing:\n- "
                        + "\n- ".join(missing))
