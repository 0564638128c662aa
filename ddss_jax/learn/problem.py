"""make_problem: a DDSS problem from a caller's frozen model, data and feature function."""

from __future__ import annotations

from typing import Any, Callable, Iterable

import flax.linen as nn
import jax
import numpy as np

from ddss_jax.data.source import (
  ArraySource,
  carve_validation,
  carve_validation_labels,
  check_finite,
)
from ddss_jax.evaluation import metrics
from ddss_jax.problems.base import Conditioning, Problem, feature_rms, rows_of
from ddss_jax.samplers import model_forms, schedules
from ddss_jax.samplers.sampler_json import ModelInfo
from ddss_jax.util import parallel, plots

FEATURE_NETWORKS = ("mnist_classifier", "inception_pool3")

def _eps_apply(eps_fn, model, schedule, num_timesteps
               ) -> tuple[Callable[[Any, jax.Array, jax.Array], jax.Array], schedules.Schedule]:
  """(eps_apply, the model's Schedule) of make_problem's model arguments."""
  if (eps_fn is None) == (model is None):
    raise ValueError("make_problem: pass exactly one of eps_fn=(params, x [B, ...], t [B]) -> "
                     "eps [B, ...] and model=<a flax.linen.Module called as model(x, t), or a "
                     "ddss_jax.samplers.model_forms.VPModel>")
  if isinstance(model, model_forms.VPModel):
    if schedule is not None:
      raise ValueError("make_problem: a model_forms.VPModel carries its schedule; drop "
                       f"schedule={schedule!r}")
    return model.eps_fn, model.schedule
  if schedule is None:
    schedule = "linear"
  if isinstance(schedule, str):
    schedule = schedules.make(schedule, num_timesteps)
  if model is None:
    return eps_fn, schedule
  if not isinstance(model, nn.Module):
    raise ValueError(f"make_problem: model={type(model).__name__} is neither a flax.linen.Module "
                     "nor a ddss_jax.samplers.model_forms.VPModel; wrap it with "
                     "ddss_jax.samplers.model_forms, or "
                     "pass eps_fn=(params, x, t) -> eps")
  return (lambda params, x, t, *cond: model.apply({"params": params}, x, t, *cond)), schedule


def _feature_network(name: str) -> tuple[Callable, Any]:
  """(feature_apply, feature_params) of a built-in feature network."""
  if name == "mnist_classifier":
    from ddss_jax.models import classifier  # pylint: disable=import-outside-toplevel
    return classifier.features_fn, classifier.load_shipped_classifier()
  if name == "inception_pool3":
    # pylint: disable-next=import-outside-toplevel
    from ddss_jax.models import inception, inception_weights
    variables = inception_weights.load_weights(inception_weights.ensure_weights(None))
    network = inception.FIDInceptionV3()
    return (lambda v, x: network.apply(v, x)["pool3"]), variables
  raise ValueError(f"make_problem: features={name!r}; valid built-in feature networks: "
                   f"{list(FEATURE_NETWORKS)}, or a function (feature_params, x [B, ...]) -> "
                   "[B, D]")


def _real_batch(data, name: str, seed: int):
  """(real_batch(key, n, rows=slice(None)), example shape, split_validation or None) of an array
  or a batch iterator."""
  if isinstance(data, (np.ndarray, jax.Array)):
    data = np.asarray(data, np.float32)
    check_finite(data, name="make_problem: data")
    source = ArraySource(name, data)
    return (source.batch, source.example_shape,
            lambda num: carve_validation(source, num, seed))
  iterator = iter(data)
  read = [0]  # examples taken from the iterator so far

  def take():
    batch = np.asarray(next(iterator), np.float32)
    check_finite(batch, name="make_problem: data (an iterator)", first_row=read[0])
    read[0] += len(batch)
    return batch

  buffered = [take()]
  example_shape = tuple(buffered[0].shape[1:])
  seen = [0]

  def real_batch(key, n, rows=slice(None)):
    del key  # an iterator decides its own order; a resumed run does not replay it
    have = sum(len(b) for b in buffered)
    while have < n:
      try:
        buffered.append(take())
      except StopIteration:
        raise ValueError(f"data: the iterator ran out after {seen[0] + have} examples; "
                         f"{n} more were asked for (give it more, or fewer steps)") from None
      have += len(buffered[-1])
    joined = np.concatenate(buffered)
    buffered[:] = [joined[n:]]
    seen[0] += n
    return joined[:n][rows]

  return real_batch, example_shape, None


def make_problem(*, model_params: Any, data: np.ndarray | Iterable[np.ndarray],
                 features: str | Callable[[Any, jax.Array], jax.Array],
                 feature_params: Any = None, eps_fn: Callable | None = None,
                 model: nn.Module | model_forms.VPModel | None = None,
                 schedule: str | schedules.Schedule | None = None, num_timesteps: int = 1000,
                 eval_data: np.ndarray | None = None, name: str = "custom", seed: int = 0,
                 kid_subsets: int = 100, kid_subset_size: int = 500,
                 model_info: ModelInfo | None = None, cond: Any = None,
                 eval_cond: Any = None, null_cond: Any = None,
                 cond_embed: Callable[[Any], jax.Array] | None = None) -> Problem:
  """A DDSS problem from your frozen model, data and features.

  Args:
    model_params: the frozen model's weights (passed to every call, never closed over).
    data: real training examples [N, ...] (float, the model's data range, e.g. [-1, 1]), drawn
      at random; or an iterable of arrays [b, ...] of examples, taken in its order (b need not
      be the batch size).
    features: the KID loss's feature map, a function (feature_params, x [B, ...]) -> [B, D], or
      a built-in network: "mnist_classifier" (the shipped MNIST classifier's 96-d features) or
      "inception_pool3" (the FID Inception's 2048-d pool3; its weights must be in the cache).
    feature_params: the feature function's weights (ignored for a built-in network).
    eps_fn: (model_params, x [B, ...], t [B]) -> eps [B, ...], t in [0, T - 1]; or
    model: a flax.linen.Module called as model(x, t) with {"params": model_params}, or a model
      of another form (x0, v, score or velocity prediction; continuous time; EDM's sigma;
      flow matching) wrapped by ddss_jax.samplers.model_forms, which brings its schedule.
    schedule, num_timesteps: the frozen model's noise schedule (a name and T, or a Schedule;
      default "linear"); not with a model_forms.VPModel.
    eval_data: held-out examples [M, ...] for evaluate_samplers (KID, FID, precision and recall
      in the feature space); None: the problem can be trained on, not evaluated.
    name, seed: the problem's name in results; the seed of the evaluation's KID subsets and of
      the validation split carved from an array of data.
    kid_subsets, kid_subset_size: KID mean and std over random subsets at evaluation.
    model_info: the frozen model as a saved sampler records it, ModelInfo(source=<hub id or
      path>, sha256=<weights' digest>, prediction=<what the network outputs: "eps", "x0" or
      "v">); None: "unspecified".
    cond: a conditional model's conditions of the training examples, a pytree of arrays with
      leading axis N (data must then be an array [N, ...]); the model is then called as
      eps_fn(params, x, t, cond) (or model(x, t, cond)), and each DDSS step draws its samples
      for the conditions of a draw of data's rows (LossConfig.conditional says how they are
      compared with the real examples).
    eval_cond: the conditions [M, ...] of eval_data: evaluation sample i is drawn for row
      i mod M.
    null_cond: one example's unconditional input (e.g. the "no class" label), for guided
      samplers (sampler.guidance); None: guidance is refused.
    cond_embed: conditions [B, ...] -> [B, E] joined to the features (the joined KID loss,
      validation scores); default for integer labels [N]: their one-hot (max(cond) + 1
      classes) times the features' RMS norm on data. Integer labels are also the classes of
      the KID within classes (the default conditional loss); other conditions need
      loss.conditional="joined".
  """
  eps_apply, schedule = _eps_apply(eps_fn, model, schedule, num_timesteps)
  if model_info is not None and not isinstance(model_info, ModelInfo):
    raise ValueError(f"make_problem: model_info must be a ddss_jax.ModelInfo(source=, sha256=, "
                     f"prediction=) or None, got {type(model_info).__name__}")
  if isinstance(features, str):
    feature_apply, feature_params = _feature_network(features)
  else:
    feature_apply = features
  real_batch, example_shape, split = _real_batch(data, f"{name}/train", seed)
  conditioning = None
  if cond is not None:
    conditioning = _conditioning(data, cond, eval_cond, null_cond, cond_embed, feature_apply,
                                 feature_params, seed)
  elif eval_cond is not None or null_cond is not None or cond_embed is not None:
    raise ValueError("make_problem: eval_cond, null_cond and cond_embed are for a conditional "
                     "model: pass cond=, the conditions of data, too")
  _check_shapes(eps_apply, model_params, feature_apply, feature_params, example_shape,
                None if conditioning is None else rows_of(cond, np.arange(2)))
  plot = plots.image_grids if len(example_shape) == 3 else plots.scatter_panels
  evaluate_fn = None
  if eval_data is not None:
    eval_data = np.asarray(eval_data, np.float32)
    check_finite(eval_data, name="make_problem: eval_data")
    if eval_data.shape[1:] != example_shape:
      raise ValueError(f"make_problem: eval_data has examples of shape {eval_data.shape[1:]}, "
                       f"data has {example_shape}; they must match")
    evaluate_fn = _feature_evaluation(feature_apply, feature_params, eval_data, seed=seed,
                                      kid_subsets=kid_subsets, kid_subset_size=kid_subset_size)
  return Problem(name=name, schedule=schedule, example_shape=example_shape, eps_apply=eps_apply,
                 model_params=model_params, feature_apply=feature_apply,
                 feature_params=feature_params, real_batch=real_batch, evaluate=evaluate_fn,
                 plot=plot, split_validation=split, model_info=model_info or ModelInfo(),
                 conditioning=conditioning)


def _conditioning(data, cond, eval_cond, null_cond, cond_embed, feature_apply, feature_params,
                  seed: int) -> Conditioning:
  """make_problem's Conditioning: the rows of cond follow the rows of data drawn."""
  if not isinstance(data, (np.ndarray, jax.Array)):
    raise ValueError("make_problem: cond= needs data as an array [N, ...] (its rows are the "
                     "conditions' rows), not an iterator")
  count = len(data)
  leaves = jax.tree.leaves(cond)
  if not leaves or any(np.ndim(c) == 0 or len(c) != count for c in leaves):
    raise ValueError(f"make_problem: cond must be a pytree of arrays with leading axis "
                     f"{count} (one row per example of data); got shapes "
                     f"{[np.shape(c) for c in leaves]}")
  if eval_cond is None:
    raise ValueError("make_problem: a conditional problem needs eval_cond=, the conditions the "
                     "evaluation draws its samples for (those of eval_data)")
  # Row indices as the source's labels: its draws and its split give the rows of cond.
  rows = ArraySource("cond", np.zeros((count, 1), np.float32), np.arange(count))
  labels = np.asarray(leaves[0])
  is_labels = len(leaves) == 1 and labels.ndim == 1 and np.issubdtype(labels.dtype, np.integer)
  num_classes = int(labels.max()) + 1 if is_labels else 0
  if cond_embed is None:
    if not is_labels:
      raise ValueError("make_problem: cond is not integer labels [N]; pass cond_embed=, a "
                       "function conditions [B, ...] -> [B, E] joined to the features")
    features_of = jax.jit(feature_apply)
    sample = np.asarray(data, np.float32)[:min(count, 500)]
    scale = feature_rms(features_of(feature_params, sample))
    cond_embed = lambda c: scale * jax.nn.one_hot(c, num_classes)

  def validation(num):
    rest, held = carve_validation_labels(rows, num, seed)
    return (lambda key, n, r=slice(None): rows_of(cond, rest(key, n, r))), rows_of(cond, held)

  real = lambda key, n, r=slice(None): rows_of(cond, rows.label_batch(key, n, r))
  return Conditioning(null=null_cond, real=real,
                      embed=cond_embed, held_out=eval_cond, validation=validation,
                      classes=(lambda c: c) if is_labels else None, num_classes=num_classes)


def _check_shapes(eps_apply, model_params, feature_apply, feature_params,
                  example_shape: tuple[int, ...], cond: Any = None) -> None:
  """Raises ValueError naming the model or the feature function where it maps a batch x [2, ...]
  to the wrong shape (traced abstractly: nothing compiles, nothing runs)."""
  x = jax.ShapeDtypeStruct((2,) + tuple(example_shape), np.float32)
  t = jax.ShapeDtypeStruct((2,), np.float32)
  try:
    out = jax.eval_shape(eps_apply, model_params, x, t, *(() if cond is None else (cond,)))
  except Exception as e:  # pylint: disable=broad-except  (any error of the caller's model)
    raise ValueError(f"make_problem: the model fails on x of shape {x.shape} with t of shape "
                     f"(2,): {type(e).__name__}: {e}") from e
  if getattr(out, "shape", None) != x.shape:
    raise ValueError(f"make_problem: the model maps x of shape {x.shape} to "
                     f"{getattr(out, 'shape', type(out).__name__)}; it must return eps (or its "
                     "prediction) of x's shape")
  try:
    feats = jax.eval_shape(feature_apply, feature_params, x)
  except Exception as e:  # pylint: disable=broad-except
    raise ValueError(f"make_problem: the feature function fails on x of shape {x.shape}: "
                     f"{type(e).__name__}: {e}") from e
  shape = getattr(feats, "shape", None)
  if shape is None or len(shape) != 2 or shape[0] != 2:
    raise ValueError(f"make_problem: the feature function maps x of shape {x.shape} to "
                     f"{shape if shape is not None else type(feats).__name__}; it must return "
                     "features [B, D], one row per example")


def _feature_evaluation(feature_apply, feature_params, eval_data: np.ndarray, *, seed: int,
                        kid_subsets: int, kid_subset_size: int):
  """samples [N, ...] -> KID (subset mean, std), FID and k-NN precision/recall (k = 3) against
  eval_data in the feature space."""
  features_of = jax.jit(feature_apply)
  batched = lambda x: parallel.padded_apply(lambda b: features_of(feature_params, b), x, 500)
  reference = batched(eval_data)
  check_finite(reference, name="make_problem: the features of eval_data", what="features")

  def evaluate_fn(samples: np.ndarray, cond: Any = None) -> dict[str, float]:
    del cond  # a conditional problem's samples are compared with eval_data as a whole
    feats = batched(samples)
    size = min(kid_subset_size, len(feats), len(reference))
    kid_mean, kid_std = metrics.kid_subsets(feats, reference, key=jax.random.PRNGKey(seed),
                                            num_subsets=kid_subsets, subset_size=size)
    precision, recall = metrics.precision_recall(reference, feats)
    return {"kid": float(kid_mean), "kid_std": float(kid_std),
            "fid": metrics.fid_from_features(feats, reference), "precision": precision,
            "recall": recall}

  return evaluate_fn
