"""k-NN precision/recall against a float64 NumPy brute force and torch-fidelity 0.4.0's "prc"."""

import importlib.util
import re
import sys
import types

import numpy as np
import pytest

from ddss_jax.evaluation import metrics


def numpy_precision_recall(real, fake, k):
  """Full distance matrices in float64; a ball's radius is the k-th smallest distance to others.

  Also returns the smallest relative gap |d - radius| / radius over all comparisons, so a test
  can check that float32 rounding cannot flip any membership.
  """
  real, fake = np.asarray(real, np.float64), np.asarray(fake, np.float64)
  dist = lambda a, b: np.sqrt(((a[:, None, :] - b[None, :, :]) ** 2).sum(-1))
  radius_real = np.sort(dist(real, real), axis=1)[:, k]  # column 0 is the sample itself
  radius_fake = np.sort(dist(fake, fake), axis=1)[:, k]
  d_fake_real = dist(fake, real)  # [M, N]
  precision = np.mean(np.any(d_fake_real <= radius_real[None, :], axis=1))
  recall = np.mean(np.any(d_fake_real.T <= radius_fake[None, :], axis=1))
  gap = min(np.min(np.abs(d_fake_real - radius_real[None, :]) / radius_real[None, :]),
            np.min(np.abs(d_fake_real.T - radius_fake[None, :]) / radius_fake[None, :]))
  return precision, recall, gap


def clouds(n, m, d, seed, shift=0.8, scale=1.5):
  """Real N(0, I) [n, d] and fake N(shift, scale^2 I) [m, d], float32: 0 < precision, recall < 1."""
  rng = np.random.default_rng(seed)
  real = rng.normal(size=(n, d)).astype(np.float32)
  fake = (shift + scale * rng.normal(size=(m, d))).astype(np.float32)
  return real, fake


# (n, m, d, k, shift, scale, seed): chosen so that 0 < precision, recall < 1 in each case.
CASES = [(40, 30, 8, 3, 0.8, 1.5, 0), (25, 50, 4, 1, 0.8, 1.5, 1), (60, 45, 16, 5, 0.3, 0.9, 0)]
TORCH_CASES = [(50, 40, 8, 3, 0.8, 1.5, 3), (30, 60, 32, 2, 0.3, 0.9, 1)]


@pytest.mark.parametrize("n,m,d,k,shift,scale,seed", CASES)
def test_matches_numpy_float64(n, m, d, k, shift, scale, seed):
  real, fake = clouds(n, m, d, seed, shift, scale)
  precision, recall = metrics.precision_recall(real, fake, k=k)
  want_precision, want_recall, gap = numpy_precision_recall(real, fake, k)
  assert gap > 1e-5  # no near-ties: float32 and float64 must agree on every membership
  assert 0 < want_precision < 1 and 0 < want_recall < 1
  assert (precision, recall) == (want_precision, want_recall)


def _metric_prc():
  """torch-fidelity's metric_prc module.

  Its package __init__ and torch_fidelity.utils import torchvision, which is not installed here
  (see tests/test_inception.py); metric_prc uses utils only in calculate_prc (from images), so where
  the normal import fails it is imported under a bare package module with a stub utils.
  """
  pytest.importorskip("torch", reason="parity needs torch: pip install -e '.[parity]'")
  try:
    from torch_fidelity import metric_prc
    return metric_prc
  except ImportError:
    pass
  existing = sys.modules.get("torch_fidelity")
  if getattr(existing, "__path__", None):  # e.g. test_inception's bare package (no __spec__)
    locations = list(existing.__path__)
  else:
    spec = importlib.util.find_spec("torch_fidelity")
    if spec is None:
      pytest.skip("parity needs torch-fidelity: pip install --no-deps torch-fidelity")
    locations = list(spec.submodule_search_locations)
  saved = {name: sys.modules.get(name) for name in
           ("torch_fidelity", "torch_fidelity.utils", "torch_fidelity.metric_prc")}
  bare = types.ModuleType("torch_fidelity")
  bare.__path__ = locations
  stub = types.ModuleType("torch_fidelity.utils")
  for name in ("create_feature_extractor", "extract_featuresdict_from_input_id_cached",
               "resolve_feature_extractor", "resolve_feature_layer_for_metric"):
    setattr(stub, name, None)
  sys.modules.update({"torch_fidelity": bare, "torch_fidelity.utils": stub})
  sys.modules.pop("torch_fidelity.metric_prc", None)
  try:
    from torch_fidelity import metric_prc
  finally:  # leave no stub behind for other tests
    for name, module in saved.items():
      if module is None:
        sys.modules.pop(name, None)
      else:
        sys.modules[name] = module
  return metric_prc


@pytest.mark.parity
@pytest.mark.parametrize("save_cpu_ram", [False, True])
@pytest.mark.parametrize("n,m,d,k,shift,scale,seed", TORCH_CASES)
def test_matches_torch_fidelity(n, m, d, k, shift, scale, seed, save_cpu_ram):
  metric_prc = _metric_prc()  # skips, saying why, without torch or torch-fidelity
  import torch  # pylint: disable=import-outside-toplevel
  real, fake = clouds(n, m, d, seed, shift, scale)
  assert numpy_precision_recall(real, fake, k)[2] > 1e-5  # no near-ties
  fn = (metric_prc.calculate_precision_recall_part if save_cpu_ram
        else metric_prc.calculate_precision_recall_full)
  # torch-fidelity's features_1 is the generated set, features_2 the real one.
  want = fn(torch.from_numpy(fake), torch.from_numpy(real), neighborhood=k, batch_size=16)
  got = metrics.precision_recall(real, fake, k=k)
  assert 0 < want[0] < 1 and 0 < want[1] < 1
  np.testing.assert_allclose(got, want, rtol=0, atol=1e-6)  # torch's mean is float32


def test_identical_and_far_apart_sets():
  real, fake = clouds(20, 20, 6, seed=0)
  assert metrics.precision_recall(real, real) == (1.0, 1.0)
  assert metrics.precision_recall(real, real + 1000.0) == (0.0, 0.0)


@pytest.mark.parametrize("batch_size", [1, 7, 64])
def test_chunking_does_not_change_the_result(batch_size):
  real, fake = clouds(37, 29, 8, seed=3)
  assert (metrics.precision_recall(real, fake, batch_size=batch_size)
          == metrics.precision_recall(real, fake, batch_size=1000))


@pytest.mark.parametrize("kwargs,shapes,needle", [
    (dict(k=0), ((10, 4), (10, 4)), "k, got 0"),
    (dict(k=2.5), ((10, 4), (10, 4)), "k, got 2.5"),
    (dict(k=True), ((10, 4), (10, 4)), "k, got True"),
    (dict(batch_size=-1), ((10, 4), (10, 4)), "batch_size, got -1"),
    ({}, ((10,), (10, 4)), "got (10,) and (10, 4)"),
    ({}, ((10, 4), (10, 4, 1)), "got (10, 4) and (10, 4, 1)"),
    ({}, ((10, 4), (10, 5)), "got (10, 4) and (10, 5)"),
    (dict(k=3), ((3, 4), (10, 4)), "k + 1 = 4 rows in real_feats, got 3"),
    (dict(k=5), ((10, 4), (5, 4)), "k + 1 = 6 rows in fake_feats, got 5"),
])
def test_bad_inputs_raise(kwargs, shapes, needle):
  real, fake = (np.zeros(shape, np.float32) for shape in shapes)
  with pytest.raises(ValueError, match=re.escape(needle)):
    metrics.precision_recall(real, fake, **kwargs)
