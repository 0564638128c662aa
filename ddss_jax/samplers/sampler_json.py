"""sampler.json, the file a learned sampler leaves JAX in: its format, writing, validated reading.

The file is self-describing (docs/deploy.md gives it field by field): what rebuilds the sampler in
ddss_jax (family, K, stride, eta, the schedule's alpha_bars, the parameters), what runs it anywhere
else (the per-step coefficients t, b, c, mu, nu, sigma of the recurrence of docs/method.md,
section 3, and clip_x0), and the model it was learned for (source, sha256, prediction type). A
guided sampler (version 3) adds its "guidance" (weight, interval, learn) and the per-step weights
coefficients.w it calls the guided model with, eps = eps_u + w (eps_c - eps_u); files of
unguided samplers stay version 2.

This module reads and writes plain NumPy and JSON, and imports neither JAX nor torch, so the NumPy
reference (ddss_jax.samplers.numpy_reference) and the diffusers scheduler
(ddss_jax.samplers.diffusers_scheduler)
read the file without them. Reading checks every field, and a bad file raises ValueError naming
the file and the field. Version 1 files (no "format" field: no model, no clip_x0) still load.
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
from typing import Any

import numpy as np

from ddss_jax.util import files

FORMAT = "ddss_jax.sampler"
VERSION = 2          # what `to_json` writes for an unguided sampler
GUIDED_VERSION = 3   # ... and for a guided one (the fields guidance and coefficients.w)
VERSIONS = (1, 2, 3)  # what `read` accepts
PREDICTIONS = ("eps", "x0", "v")  # what the network outputs (ddss_jax.samplers.diffusion.as_eps_fn)
COEFFICIENTS = ("t", "b", "c", "mu", "nu", "sigma")
UNSPECIFIED = "unspecified"
_SHA256 = re.compile(r"[0-9a-f]{64}")


@dataclasses.dataclass(frozen=True)
class ModelInfo:
  """The frozen model a sampler was learned for, as sampler.json records it.

  Attributes:
    source: a hub id, a checkpoint folder, a weights file name, or "unspecified".
    sha256: the weights file's sha256 (64 lower-case hex digits), or None where unknown.
    prediction: what the network outputs, "eps", "x0" or "v"; the coefficients always act on
      eps, so a runner outside ddss_jax converts the output first (docs/deploy.md).
  """
  source: str = UNSPECIFIED
  sha256: str | None = None
  prediction: str = "eps"

  def __post_init__(self):
    if not isinstance(self.source, str) or not self.source:
      raise ValueError(f"model_info.source must be a non-empty string (a hub id, a path or "
                       f"'{UNSPECIFIED}'), got {self.source!r}")
    if self.sha256 is not None and not (isinstance(self.sha256, str)
                                        and _SHA256.fullmatch(self.sha256)):
      raise ValueError(f"model_info.sha256 must be None or 64 lower-case hex digits, got "
                       f"{self.sha256!r}")
    if self.prediction not in PREDICTIONS:
      raise ValueError(f"model_info.prediction={self.prediction!r}; valid choices: "
                       f"{list(PREDICTIONS)}")


@dataclasses.dataclass(frozen=True)
class SamplerSpec:
  """The content of a sampler file, arrays as float64 NumPy (K = num_steps, T = num_timesteps).

  Attributes:
    version: the file's format version (1 or 2; `to_json` writes VERSION).
    family, num_steps, stride, eta: what ddss_jax.samplers.make rebuilds the sampler from.
    schedule_name, num_timesteps: the model's schedule.
    alpha_bars: [T] alpha_bar at the integer times (None only in early version 1 files).
    timesteps: [K] model time inputs, largest first.
    params: {name: array} the sampler's parameters (empty for the fixed families).
    coefficients: {"t", "b", "c", "mu", "sigma": [K], "nu": [K, K]} of the recurrence, step 0
      (the noisiest) first.
    clip_x0: None, or r > 0: each step clips x0_pred to [-r, r].
    model: the model it was learned for (version 1 files: ModelInfo(), unspecified).
    guidance: None, or {"weight", "interval", "learn"} of a guided sampler (version 3), whose
      coefficients then hold "w" [K] too (ddss_jax.samplers.guidance).
  """
  version: int
  family: str
  num_steps: int
  stride: str
  eta: float
  schedule_name: str
  num_timesteps: int
  alpha_bars: np.ndarray | None
  timesteps: np.ndarray
  params: dict[str, np.ndarray]
  coefficients: dict[str, np.ndarray]
  clip_x0: float | None = None
  model: ModelInfo = ModelInfo()
  guidance: dict[str, Any] | None = None


def _as_list(a) -> list:
  return np.asarray(a, np.float64).tolist()


def to_json(spec: SamplerSpec) -> dict[str, Any]:
  """The JSON object of a spec, in VERSION (GUIDED_VERSION for a guided sampler)."""
  guided = spec.guidance is not None
  data = {
      "format": FORMAT, "version": GUIDED_VERSION if guided else VERSION,
      "family": spec.family, "num_steps": spec.num_steps, "stride": spec.stride,
      "eta": spec.eta, "clip_x0": spec.clip_x0,
      "model": dataclasses.asdict(spec.model),
      "schedule": {"name": spec.schedule_name, "num_timesteps": spec.num_timesteps,
                   # The exact schedule, so that non-default betas (a checkpoint's
                   # scheduler_config.json) survive a reload.
                   "alpha_bars": _as_list(spec.alpha_bars)},
      "timesteps": _as_list(spec.timesteps),
      "params": {name: _as_list(value) for name, value in spec.params.items()},
      "coefficients": {name: _as_list(spec.coefficients[name])
                       for name in COEFFICIENTS + (("w",) if guided else ())},
  }
  if guided:
    data["guidance"] = spec.guidance
  return data


def save(path: str, spec: SamplerSpec) -> None:
  """Writes to_json(spec) to `path` atomically."""
  files.write_json(path, to_json(spec))


def read(path: str) -> SamplerSpec:
  """The validated content of the sampler file at `path` (version 1 or 2).

  Raises ValueError naming the file and the field: not JSON (e.g. a truncated file), an unknown
  format or version, a missing field, an array of the wrong shape, NaN or Inf.
  """
  with open(path, encoding="utf-8") as f:
    text = f.read()
  try:
    data = json.loads(text)
  except json.JSONDecodeError as e:
    raise ValueError(f"{path}: not a JSON file ({e}); a truncated or partly copied sampler "
                     "file? Write it again with ddss_jax.samplers.save") from None
  return from_json(data, source=path)


def from_json(data: Any, *, source: str = "sampler.json") -> SamplerSpec:
  """The validated spec of a parsed sampler file; `source` names it in errors."""
  fields = _Fields(data, source)
  version = fields.version()
  num_steps = fields.integer("num_steps", low=1)
  num_timesteps = fields.integer("schedule.num_timesteps", low=2)
  needs_alpha_bars = version >= 2 or fields.has("schedule.alpha_bars")
  params = fields.get("params", dict)
  clip_x0 = fields.get("clip_x0", (int, float, type(None))) if version >= 2 else None
  guidance = fields.guidance() if version >= 3 else None
  names = COEFFICIENTS + (("w",) if guidance is not None else ())
  if clip_x0 is not None and (isinstance(clip_x0, bool) or not math.isfinite(clip_x0)
                              or clip_x0 < 0):
    fields.fail("clip_x0", f"is {clip_x0!r}; must be null (off) or a number r >= 0")
  return SamplerSpec(
      version=version, family=fields.get("family", str), num_steps=num_steps,
      stride=fields.get("stride", str), eta=float(fields.number("eta")),
      schedule_name=fields.get("schedule.name", str), num_timesteps=num_timesteps,
      alpha_bars=(fields.array("schedule.alpha_bars", (num_timesteps,)) if needs_alpha_bars
                  else None),
      timesteps=fields.array("timesteps", (num_steps,)),
      params={name: fields.array(f"params.{name}") for name in params},
      coefficients={name: fields.array(f"coefficients.{name}",
                                       (num_steps, num_steps) if name == "nu" else (num_steps,))
                    for name in names},
      clip_x0=float(clip_x0) if clip_x0 else None,
      model=fields.model() if version >= 2 else ModelInfo(), guidance=guidance)


class _Fields:
  """Typed access to a parsed file's fields by dotted name; each error names the file and field."""

  def __init__(self, data: Any, source: str):
    if not isinstance(data, dict):
      raise ValueError(f"{source}: holds a JSON {type(data).__name__}, not a sampler file's "
                       "object")
    self._data, self._source = data, source

  def fail(self, name: str, problem: str):
    raise ValueError(f"{self._source}: field {name!r} {problem}")

  def has(self, name: str) -> bool:
    node = self._data
    for part in name.split("."):
      if not isinstance(node, dict) or part not in node:
        return False
      node = node[part]
    return True

  def get(self, name: str, kind: type | tuple[type, ...]) -> Any:
    node, seen = self._data, []
    for part in name.split("."):
      if not isinstance(node, dict):
        self.fail(".".join(seen), f"is a {type(node).__name__}, expected an object")
      if part not in node:
        self.fail(name, "is missing")
      node = node[part]
      seen.append(part)
    if not isinstance(node, kind):
      names = [k.__name__ for k in (kind if isinstance(kind, tuple) else (kind,))]
      self.fail(name, f"is {node!r} ({type(node).__name__}); expected {' or '.join(names)}")
    return node

  def number(self, name: str) -> float:
    value = self.get(name, (int, float))
    if isinstance(value, bool) or not math.isfinite(value):
      self.fail(name, f"is {value!r}; expected a finite number")
    return value

  def integer(self, name: str, *, low: int) -> int:
    value = self.get(name, int)
    if isinstance(value, bool) or value < low:
      self.fail(name, f"is {value!r}; expected an integer >= {low}")
    return value

  def array(self, name: str, shape: tuple[int, ...] | None = None) -> np.ndarray:
    raw = self.get(name, (list, int, float))
    try:
      value = np.asarray(raw, np.float64)
    except (TypeError, ValueError):
      self.fail(name, "is not an array of numbers (ragged, or holds something else)")
    if shape is not None and value.shape != shape:
      self.fail(name, f"has shape {value.shape}, expected {shape} (num_steps = "
                      f"{self._data.get('num_steps')})")
    bad = np.argwhere(~np.isfinite(value))
    if len(bad):
      self.fail(name, f"holds NaN or Inf (first at index {tuple(int(i) for i in bad[0])})")
    return value

  def version(self) -> int:
    if "format" not in self._data:  # version 1 had neither field
      if "version" in self._data:
        self.fail("format", f"is missing (version {self._data['version']!r} given); expected "
                            f"{FORMAT!r}")
      return 1
    if self._data["format"] != FORMAT:
      self.fail("format", f"is {self._data['format']!r}; expected {FORMAT!r}")
    version = self.get("version", int)
    if version not in VERSIONS:
      self.fail("version", f"is {version!r}; this ddss_jax reads versions {list(VERSIONS)} "
                           "(a newer ddss_jax wrote it?)")
    return version

  def guidance(self) -> dict[str, Any]:
    guidance = self.get("guidance", dict)
    if set(guidance) != {"weight", "interval", "learn"}:
      self.fail("guidance", f"has the fields {sorted(guidance)}; expected interval, learn, "
                            "weight")
    self.number("guidance.weight")
    self.get("guidance.learn", bool)
    interval = self.get("guidance.interval", (list, type(None)))
    is_number = lambda v: isinstance(v, (int, float)) and not isinstance(v, bool)
    if interval is not None and not (
        len(interval) == 2 and is_number(interval[0]) and 0 <= interval[0]
        and (interval[1] == "inf" or is_number(interval[1]) and interval[0] < interval[1])):
      self.fail("guidance.interval", f"is {interval!r}; expected null or [low, high], 0 <= low "
                                     "< high (high may be \"inf\")")
    return guidance

  def model(self) -> ModelInfo:
    model = self.get("model", dict)
    sha256 = self.get("model.sha256", (str, type(None)))
    try:
      return ModelInfo(source=self.get("model.source", str), sha256=sha256,
                       prediction=self.get("model.prediction", str))
    except ValueError as e:
      self.fail("model", f"is {model!r}: {e}")
