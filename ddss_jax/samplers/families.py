"""Few-step samplers of a frozen VP diffusion model: fixed baselines and learnable families.

The public contract (code outside the repository relies on it):

    sampler = samplers.make(family, schedule, num_steps, *, stride="quadratic", clip_x0=None)
    params  = sampler.init()            # pytree of float arrays: the trainable degrees of freedom
    x0      = sampler.sample(params, eps_fn, key, shape, *, x_T=None)
    taus    = sampler.timesteps(params) # [K] model time inputs, largest first

Families (docs/method.md, section 3), each K model calls:
  "ddpm"    strided ancestral sampling, DDIM with eta = 1; no parameters.
  "ddim"    DDIM(eta), eta = 0 by default; no parameters.
  "vars"    the DDIM mean with the K per-step noise scales learned.
  "dpm-solver++2m"  DPM-Solver++(2M) (Lu et al. 2022, Algorithm 2; data prediction, second-order
            multistep, first order at the first step and at the final step to sigma = 0); no
            parameters. It is a GGDM with fixed coefficients: the previous x0 prediction is a
            linear combination of the states, so it runs the same recurrence
            (ddss_jax.samplers.solvers).
  "unipc"   UniPC (Zhao et al. 2023): the same predictor plus the UniC corrector, order 2, bh2.
  "ipndm"   iPNDM (Zhang and Chen 2023): Adams-Bashforth in the eps predictions, up to order 4.
  "dpm-solver++2m+time", "unipc+time", "ipndm+time"  the solvers with their K times learned: the
            coefficients follow the times, as in learned-schedule solvers.
  "ggdm"    x_{k-1} = mu_k x0_pred_k + sum_{j >= k} nu_{k,j} x_j + sigma_k z_k, with mu, nu, sigma
            learned; "+pred" also learns the x0-prediction coefficients (b_k, c_k); "+time" learns
            the K model time inputs.
All of them run `ddss_jax.samplers.recurrence.run`, which gives O(K |x|)-memory gradients.

Parameterisations (the project's choices; docs/method.md, section 7):
  vars:  noise_angle [K]; with r = sqrt(1 - alpha_bar_next), sigma = r sin(angle) and the DDIM
         eps coefficient is r cos(angle), so every value is a valid sampler (eta = 0 at angle 0).
  ggdm:  mu [K], nu [K, K] (lower triangle used), sigma [K], stored directly.
  +pred: log_b [K], log_c [K] (b, c > 0 always); without +pred, b = a(t), c = s(t).
  +time: time_logits [K + 1]: the gaps between consecutive times (and the ends 0 and T - 1) are
         softmax(time_logits), so times stay strictly decreasing inside (0, T - 1). A gap of zero
         in the initial stride (t = 0 is part of both strides) is floored at MIN_TIME_GAP of the
         range, which moves that time by about 1e-3 model time units.
Every learnable family at init reproduces DDIM(eta) (eta = 0 by default; eta = 1 is DDPM), or,
for the GGDM families made with start_solver, that solver at the stride.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from ddss_jax.samplers import conv_layout, ddim, recurrence, sampler_json, schedules, solvers
from ddss_jax.samplers.guidance import Guidance, initial_weights
from ddss_jax.samplers.schedules import Schedule
from ddss_jax.samplers.times import (MIN_TIME_GAP, STRIDES, decode_times, stride_timesteps,
                                    time_logits)

FAMILIES = ("ddpm", "ddim", "dpm-solver++2m", "unipc", "ipndm", "vars", "ggdm", "ggdm+pred",
            "ggdm+time", "ggdm+pred+time", "dpm-solver++2m+time", "unipc+time", "ipndm+time")
FIXED_FAMILIES = ("ddpm", "ddim", "dpm-solver++2m", "unipc", "ipndm")  # nothing to learn

Params = dict[str, jax.Array]
EpsFn = Callable[[jax.Array, jax.Array], jax.Array]


@dataclasses.dataclass(frozen=True, eq=False)
class Sampler:
  """A K-step sampler of one family. Build it with `make`; it holds no arrays you train."""
  family: str
  schedule: Schedule
  num_steps: int
  stride: str
  eta: float
  gradient: str
  unroll: int = 1
  canonical_convs: bool = True
  clip_x0: float | None = None  # r: every x0 prediction clipped to [-r, r]; None: no clipping
  # A GGDM family's start: this training-free solver's coefficients at the stride (GGDM runs
  # them exactly: a multistep solver is a GGDM); None: DDIM(eta).
  start_solver: str | None = None
  # Classifier-free guidance of a conditional model (ddss_jax.samplers.guidance); None: the
  # model is called without a weight.
  guidance: Guidance | None = None

  @property
  def is_ggdm(self) -> bool:
    """Whether the family is GGDM (+PRED, +TIME): a non-Markovian step that represents DDIM,
    DDPM and the multistep solvers exactly."""
    return self.family.startswith("ggdm")

  @property
  def learns_pred(self) -> bool:
    return "+pred" in self.family

  @property
  def learns_time(self) -> bool:
    return "+time" in self.family

  @property
  def solver(self) -> str | None:
    """The training-free solver behind the family ("unipc" for "unipc+time"), else None."""
    base = self.family.removesuffix("+time")
    return base if base in solvers.SOLVERS else None

  @property
  def stochastic(self) -> bool:
    """Whether the sampler draws noise at each step (learnable noise counts)."""
    return self.family in ("ddpm", "vars") or self.is_ggdm or self.eta > 0

  @property
  def markov(self) -> bool:
    """Whether each step reads only the current state (nu diagonal): not so for GGDM and the
    multistep solvers."""
    return not (self.is_ggdm or self.solver is not None)

  @property
  def initial_timesteps(self) -> np.ndarray:
    """[K] the stride's times, largest first."""
    return stride_timesteps(self.stride, self.schedule, self.num_steps)

  # -- parameters -------------------------------------------------------------------------------

  def init(self) -> Params:
    """The trainable parameters at their initial value (empty for FIXED_FAMILIES), with
    "guidance" [K] where the guidance weights are learned."""
    params = self._family_init()
    if self.guidance is not None and self.guidance.learn:
      params["guidance"] = initial_weights(
          self.guidance, schedule=self.schedule,
          t=jnp.asarray(self.initial_timesteps, jnp.float32))
    return params

  def _family_init(self) -> Params:
    if self.family in FIXED_FAMILIES:
      return {}
    if self.solver is not None:  # "+time": the times are all there is to learn
      return {"time_logits": time_logits(self.initial_timesteps, self.schedule.num_timesteps)}
    t = jnp.asarray(self.initial_timesteps, jnp.float32)
    if self.family == "vars":
      return {"noise_angle": ddim.noise_angle(schedule=self.schedule, t=t, eta=self.eta)}
    start = (ddim.coefficients(schedule=self.schedule, t=t, eta=self.eta)
             if self.start_solver is None
             else solvers.coefficients(self.start_solver, self.schedule, t))
    params = {"mu": start.mu, "nu": start.nu, "sigma": start.sigma}
    if self.learns_pred:
      params["log_b"] = jnp.log(start.b)
      params["log_c"] = jnp.log(start.c)
    if self.learns_time:
      params["time_logits"] = time_logits(self.initial_timesteps, self.schedule.num_timesteps)
    return params

  def timesteps(self, params: Params) -> jax.Array:
    """[K] float model time inputs, largest first."""
    if self.learns_time:
      return decode_times(params["time_logits"], self.schedule.num_timesteps)
    return jnp.asarray(self.initial_timesteps, jnp.float32)

  def coefficients(self, params: Params) -> recurrence.Coefficients:
    """The per-step coefficients of the recurrence that these parameters define, with the
    guidance weights w where the sampler guides."""
    coeffs = self._family_coefficients(params)
    if self.guidance is None:
      return coeffs
    return coeffs._replace(w=params["guidance"] if self.guidance.learn else initial_weights(
        self.guidance, schedule=self.schedule, t=coeffs.t))

  def _family_coefficients(self, params: Params) -> recurrence.Coefficients:
    t = self.timesteps(params)
    if self.family in ("ddpm", "ddim"):
      return ddim.coefficients(schedule=self.schedule, t=t, eta=self.eta)
    if self.solver is not None:
      return solvers.coefficients(self.solver, self.schedule, t)
    if self.family == "vars":
      return ddim.vars_coefficients(schedule=self.schedule, t=t,
                                    noise_angle=params["noise_angle"])
    if self.learns_pred:
      b, c = jnp.exp(params["log_b"]), jnp.exp(params["log_c"])
    else:
      b, c = self.schedule.alpha_sigma(t)
    return recurrence.Coefficients(t=t, b=b, c=c, mu=params["mu"], nu=params["nu"],
                                   sigma=params["sigma"])

  # -- sampling ---------------------------------------------------------------------------------

  def sample(self, params: Params, eps_fn: EpsFn, key: jax.Array, shape: Sequence[int], *,
             x_T: jax.Array | None = None, cond: Any = None) -> jax.Array:
    """Draws x_0 [*shape] with K calls of eps_fn. Pure; jit- and grad-able w.r.t. params.

    Args:
      params: from `init` (or trained).
      eps_fn: (x [B, ...], t [B] float, model time units) -> eps [B, ...]; with cond,
        (x, t, cond) -> eps; a guided sampler's (x, t, cond, w [B]) -> eps, the guided model
        (ddss_jax.samplers.guidance.guided). Treated as frozen.
      key: PRNG key for x_T (unless given) and the per-step noise.
      shape: [B, ...], the batch shape of x_0.
      x_T: optional starting noise of shape `shape`.
      cond: the conditioning, a pytree of arrays with leading axis B (needed to guide).
    """
    shape = _check_shape(shape)
    if x_T is not None and tuple(x_T.shape) != shape:
      raise ValueError(f"x_T has shape {tuple(x_T.shape)} but shape={shape}")
    per_example = jax.ShapeDtypeStruct(shape[:1], jnp.float32)
    inputs = (per_example,) * (1 if self.guidance is None else 2)
    if cond is not None:
      _check_cond(cond, shape[0])
      conditional = eps_fn
      eps_fn = lambda x, t, *w: conditional(x, t, cond, *w)
    elif self.guidance is not None:
      raise ValueError("a guided sampler needs cond=, the conditioning of the batch (the "
                       "guided model's eps_u comes from its null condition)")
    out = jax.eval_shape(eps_fn, jax.ShapeDtypeStruct(shape, jnp.float32), *inputs)
    if tuple(out.shape) != shape:
      raise ValueError(f"eps_fn maps x of shape {shape} to shape {tuple(out.shape)}; "
                       "it must return eps of the same shape as x")
    key_T, key_noise = jax.random.split(key)
    if x_T is None:
      x_T = jax.random.normal(key_T, shape, jnp.float32)
    return recurrence.run(self.coefficients(params), eps_fn, x_T, key_noise,
                          stochastic=self.stochastic, markov=self.markov,
                          gradient=self.gradient, unroll=self.unroll,
                          canonical_convs=self.canonical_convs, clip_x0=self.clip_x0)


def make(family: str, schedule: Schedule, num_steps: int, *, stride: str = "quadratic",
         eta: float | None = None, gradient: str = "adjoint", unroll: int = 1,
         canonical_convs: bool | None = None, clip_x0: float | None = None,
         start_solver: str | None = None, guidance: Guidance | None = None) -> Sampler:
  """Builds a K-step sampler (K = num_steps) of `family` for a model trained with `schedule`.

  Args:
    family: one of FAMILIES.
    schedule: the frozen model's noise schedule.
    num_steps: K, the number of model calls, 1 <= K <= schedule.num_timesteps.
    stride: "linear", "quadratic" or "logsnr": the fixed times, and the initial ones of "+time".
    eta: DDIM noise of "ddim" (default 0) and the DDIM(eta) that learnable families start from
      (default 0); "ddpm" is eta = 1.
    gradient: "adjoint" (O(K |x|) memory) or "checkpoint"; see `ddss_jax.samplers.recurrence`.
    unroll: model calls per compiled loop iteration (1: a loop, K: straight-line code); the
      results are the same, only speed and compile time change (ddss_jax.samplers.recurrence.run).
    canonical_convs: run convolutions in the order XLA:CPU runs fast inside loops (exact; see
      `ddss_jax.samplers.conv_layout`); None: the backend's default (on for CPU); False only to
      measure what it saves.
    clip_x0: None or 0: no clipping; r > 0: the x0 prediction of every step is clipped to
      [-r, r] (the public DDPM checkpoints' clip_sample, r = 1 for data in [-1, 1]); the update
      then reads the eps that the clipped prediction implies (ddss_jax.samplers.recurrence).
    start_solver: GGDM families only: start from this solver (one of solvers.SOLVERS) at the
      stride instead of DDIM(eta); the stride must then give distinct times and eta be 0.
    guidance: None, or the classifier-free guidance of a conditional model (fixed, in an
      interval, or learned: not for FIXED_FAMILIES); ddss_jax.samplers.guidance.
  """
  if family not in FAMILIES:
    raise ValueError(f"unknown sampler family {family!r}; valid choices: {list(FAMILIES)}")
  if stride not in STRIDES:
    raise ValueError(f"unknown stride {stride!r}; valid choices: {list(STRIDES)}")
  if gradient not in recurrence.GRADIENTS:
    raise ValueError(f"unknown gradient {gradient!r}; valid choices: {list(recurrence.GRADIENTS)}")
  if not isinstance(schedule, Schedule):
    raise ValueError("schedule must be a ddss_jax.samplers.schedules.Schedule, got "
                     f"{type(schedule)}")
  num_timesteps = schedule.num_timesteps
  if (isinstance(num_steps, bool) or not isinstance(num_steps, (int, np.integer))
      or not 1 <= num_steps <= num_timesteps):
    raise ValueError(f"num_steps must be an integer in [1, {num_timesteps}] (the schedule's "
                     f"number of timesteps), got {num_steps!r}")
  if family == "ddpm":
    if eta not in (None, 1, 1.0):
      raise ValueError(f"family 'ddpm' is DDIM with eta = 1; got eta={eta!r} (use 'ddim')")
    eta = 1.0
  if start_solver is not None:
    if not family.startswith("ggdm"):
      raise ValueError(f"start_solver={start_solver!r}: only the GGDM families start from a "
                       f"solver; family {family!r} starts from DDIM(eta)")
    if start_solver not in solvers.SOLVERS:
      raise ValueError(f"unknown start_solver {start_solver!r}; valid choices: "
                       f"{list(solvers.SOLVERS)} or None (DDIM(eta))")
  if family.removesuffix("+time") in solvers.SOLVERS or start_solver is not None:
    name = f"family {family!r}" if start_solver is None else f"start_solver {start_solver!r}"
    if eta not in (None, 0, 0.0):
      raise ValueError(f"{name} is deterministic; got eta={eta!r}")
    times = stride_timesteps(stride, schedule, num_steps)
    if len(set(times.tolist())) < len(times):
      raise ValueError(f"{name} needs distinct times; the {stride!r} stride "
                       f"repeats one at num_steps={num_steps} (use stride='linear' or 'logsnr')")
  eta = 0.0 if eta is None else float(eta)
  if not 0.0 <= eta <= 1.0:
    raise ValueError(f"eta must be in [0, 1], got {eta!r}")
  if isinstance(unroll, bool) or not isinstance(unroll, (int, np.integer)) or unroll < 1:
    raise ValueError(f"unroll must be a positive integer, got {unroll!r}")
  if guidance is not None and not isinstance(guidance, Guidance):
    raise ValueError(f"guidance must be None or a ddss_jax.samplers.guidance.Guidance, got "
                     f"{guidance!r}")
  if guidance is not None and guidance.learn and family in FIXED_FAMILIES:
    raise ValueError(f"family {family!r} has nothing to learn: guidance learn=True needs a "
                     f"learnable family ({[f for f in FAMILIES if f not in FIXED_FAMILIES]})")
  if canonical_convs is None:
    canonical_convs = conv_layout.backend_default()
  if not isinstance(canonical_convs, (bool, np.bool_)):
    raise ValueError(f"canonical_convs must be True, False or None, got {canonical_convs!r}")
  return Sampler(family=family, schedule=schedule, num_steps=int(num_steps), stride=stride,
                 eta=eta, gradient=gradient, unroll=min(int(unroll), int(num_steps)),
                 canonical_convs=bool(canonical_convs),
                 clip_x0=recurrence.check_clip_x0(clip_x0), start_solver=start_solver,
                 guidance=guidance)


def to_spec(sampler: Sampler, params: Params, *,
            model: sampler_json.ModelInfo | None = None) -> sampler_json.SamplerSpec:
  """The sampler file's content: what rebuilds the sampler, its parameters, the timesteps and
  every per-step coefficient they imply (execution order, noisiest first), and the model it was
  learned for (None: unspecified)."""
  as_array = lambda a: np.asarray(a, np.float64)
  return sampler_json.SamplerSpec(
      version=sampler_json.VERSION, family=sampler.family, num_steps=sampler.num_steps,
      stride=sampler.stride, eta=sampler.eta, schedule_name=sampler.schedule.name,
      num_timesteps=sampler.schedule.num_timesteps,
      alpha_bars=as_array(sampler.schedule.alpha_bars),
      timesteps=as_array(sampler.timesteps(params)),
      params={name: as_array(value) for name, value in params.items()},
      coefficients={name: as_array(value)
                    for name, value in sampler.coefficients(params)._asdict().items()
                    if value is not None},
      clip_x0=float(sampler.clip_x0) if sampler.clip_x0 else None,
      model=model or sampler_json.ModelInfo(),
      guidance=None if sampler.guidance is None else sampler.guidance.to_json())


def to_json(sampler: Sampler, params: Params, *,
            model: sampler_json.ModelInfo | None = None) -> dict[str, Any]:
  """The JSON object of sampler.json (ddss_jax.samplers.sampler_json, docs/deploy.md)."""
  return sampler_json.to_json(to_spec(sampler, params, model=model))


def save(path: str, sampler: Sampler, params: Params, *,
         model: sampler_json.ModelInfo | None = None) -> None:
  """Writes sampler.json (to_json) to `path` atomically."""
  sampler_json.save(path, to_spec(sampler, params, model=model))


def load(path: str, *, gradient: str = "adjoint") -> tuple[Sampler, Params]:
  """(sampler, params) from a file written by `save` (any version sampler_file reads): the
  schedule from its saved alpha_bars (older files without them: rebuilt by name). A bad file
  raises ValueError naming it and the field."""
  return from_spec(sampler_json.read(path), gradient=gradient, source=path)


def from_spec(spec: sampler_json.SamplerSpec, *, gradient: str = "adjoint",
              source: str = "sampler.json") -> tuple[Sampler, Params]:
  """(sampler, params) that a sampler file's content describes; errors name `source`."""
  if spec.alpha_bars is not None:
    schedule = Schedule(spec.schedule_name, spec.alpha_bars)
  else:
    schedule = schedules.make(spec.schedule_name, spec.num_timesteps)
  try:
    guidance = None if spec.guidance is None else Guidance.from_json(spec.guidance)
  except ValueError as e:
    raise ValueError(f"{source}: field 'guidance' {e}") from None
  try:
    sampler = make(spec.family, schedule, spec.num_steps, stride=spec.stride,
                   eta=None if spec.family == "ddpm" else spec.eta, gradient=gradient,
                   clip_x0=spec.clip_x0, guidance=guidance)
  except ValueError as e:
    raise ValueError(f"{source}: {e}") from None
  template = sampler.init()
  missing = sorted(set(template) - set(spec.params))
  if missing:
    raise ValueError(f"{source}: field 'params' lacks {missing}, which {sampler.family} has")
  params = {name: jnp.asarray(spec.params[name], jnp.float32) for name in template}
  for name, value in params.items():
    if value.shape != template[name].shape:
      raise ValueError(f"{source}: field 'params.{name}' has shape {value.shape}, expected "
                       f"{template[name].shape} for {sampler.family} with K={sampler.num_steps}")
  return sampler, params


def _check_cond(cond: Any, batch: int) -> None:
  """Raises ValueError unless every leaf of cond is an array with leading axis `batch`."""
  leaves = jax.tree.leaves(cond)
  bad = [getattr(leaf, "shape", None) for leaf in leaves
         if not getattr(leaf, "shape", None) or leaf.shape[0] != batch]
  if not leaves or bad:
    raise ValueError(f"cond must be a pytree of arrays with leading axis B = {batch} (one row "
                     f"per example), got leaves of shapes {bad or 'none'}")


def _check_shape(shape: Any) -> tuple[int, ...]:
  try:
    shape = tuple(int(d) for d in shape)
  except TypeError:
    raise ValueError(f"shape must be a sequence of positive integers [B, ...], got {shape!r}")
  if len(shape) < 2 or any(d < 1 for d in shape):
    raise ValueError(f"shape must be [B, ...] with at least one data axis and positive sizes, "
                     f"got {shape}")
  return shape
