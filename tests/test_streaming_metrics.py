"""Inception Score and streamed feature statistics against float64 NumPy/SciPy references."""

import numpy as np
import pytest
import scipy.special
import scipy.stats

from ddss_jax.evaluation import metrics
from ddss_jax.evaluation.metrics import streaming


def reference_inception_score(logits, splits):
  """The published formula, part by part: exp(mean_x KL(p(y|x) || mean_x p(y|x)))."""
  scores = []
  for part in np.array_split(np.asarray(logits, np.float64), splits):
    p = scipy.special.softmax(part, axis=1)
    marginal = p.mean(axis=0)
    scores.append(np.exp(np.mean([scipy.stats.entropy(row, marginal) for row in p])))
  return np.mean(scores), np.std(scores)


@pytest.mark.parametrize("num,splits,batch", [(100, 10, 7), (53, 4, 53), (30, 1, 4)])
def test_inception_score_matches_formula_in_any_batching(num, splits, batch):
  rng = np.random.default_rng(num)
  logits = rng.normal(size=(num, 12)) * 3.0
  stream = metrics.StreamingInceptionScore(num, splits=splits)
  for start in range(0, num, batch):
    stream.update(logits[start:start + batch].astype(np.float32))
  got = stream.result()
  want = reference_inception_score(logits.astype(np.float32), splits)
  np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-9)


def test_inception_score_closed_forms():
  # Confident and evenly spread over C classes: IS = C. Identical predictions: IS = 1.
  classes = 8
  confident = np.where(np.eye(classes)[np.arange(80) % classes] > 0, 50.0, -50.0)
  assert metrics.inception_score(confident, splits=1)[0] == pytest.approx(classes)
  same = np.tile(np.arange(classes, dtype=np.float64), (40, 1))
  mean, std = metrics.inception_score(same, splits=4)
  assert mean == pytest.approx(1.0) and std == pytest.approx(0.0, abs=1e-12)


def test_inception_score_errors():
  with pytest.raises(ValueError, match="splits=10, num_samples=5"):
    metrics.StreamingInceptionScore(5, splits=10)
  stream = metrics.StreamingInceptionScore(20, splits=2)
  stream.update(np.zeros((10, 3)))
  with pytest.raises(ValueError, match="expected 20 samples, saw 10"):
    stream.result()


def test_feature_stats_equal_numpy_and_feed_fid():
  rng = np.random.default_rng(0)
  feats = rng.normal(size=(257, 6)) * [1, 2, 3, 4, 5, 6] + 10.0  # an offset mean tests stability
  stats = streaming.FeatureStats(6, sample_size=50)
  for start in range(0, len(feats), 40):
    stats.update(feats[start:start + 40])
  np.testing.assert_allclose(stats.mean, feats.mean(axis=0), rtol=1e-12)
  np.testing.assert_allclose(stats.covariance, np.cov(feats, rowvar=False), rtol=1e-9)
  other = rng.normal(size=(100, 6))
  assert (metrics.frechet_distance(stats.mean, stats.covariance, *metrics.gaussian_stats(other))
          == pytest.approx(metrics.fid_from_features(feats, other), rel=1e-9))
  assert stats.sample.shape == (50, 6)
  assert all(any(np.array_equal(s, f) for f in feats.astype(np.float32)) for s in stats.sample)


def test_reservoir_is_uniform():
  # Each of 40 items lands in a 10-slot reservoir with probability 1/4.
  hits = np.zeros(40)
  for seed in range(400):
    stats = streaming.FeatureStats(1, sample_size=10, seed=seed)
    for start in range(0, 40, 7):
      stats.update(np.arange(start, min(start + 7, 40), dtype=np.float64)[:, None])
    hits[stats.sample[:, 0].astype(int)] += 1
  # Binomial(400, 1/4) per item: mean 100, std about 8.7; 5 std either way.
  assert np.all(np.abs(hits - 100) < 45), hits
  assert abs(hits[:10].mean() - hits[30:].mean()) < 20  # early items are not favoured


def test_stats_file_round_trip(tmp_path):
  rng = np.random.default_rng(1)
  stats = streaming.FeatureStats(3, sample_size=4)
  stats.update(rng.normal(size=(9, 3)))
  path = str(tmp_path / "ref.npz")
  stats.save(path, dataset="cifar10", split="train")
  data = streaming.load_stats(path)
  np.testing.assert_array_equal(data["mu"], stats.mean)
  np.testing.assert_array_equal(data["sigma"], stats.covariance)
  assert data["kid_sample"].shape == (4, 3) and int(data["count"]) == 9
  assert str(data["meta_dataset"]) == "cifar10"
