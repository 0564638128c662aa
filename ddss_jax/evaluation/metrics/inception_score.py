"""Inception Score (Salimans et al. 2016), streamed.

    IS = exp( E_x KL( p(y|x) || p(y) ) ),  p(y) = E_x p(y|x),

computed separately on `splits` contiguous, equal parts of the N samples (10 by convention), and
reported as the mean and (population) standard deviation over the parts, as the original TF code,
pytorch-fid's companions and torch-fidelity do. p(y|x) is the softmax of the FID Inception
network's 1008 logits *without* the fc bias ("logits_unbiased"), which is what the original
TensorFlow implementation reads off the graph.

Streaming: a part's KL sum is sum_x sum_y p log p - sum_y P_y log(P_y / n) with P = sum_x p, so
each part keeps only P [C], sum p log p and its count; N must be known in advance.
"""

from __future__ import annotations

import numpy as np


class StreamingInceptionScore:
  """Accumulates p(y|x) batch by batch for IS over `num_samples` samples in `splits` parts."""

  def __init__(self, num_samples: int, *, splits: int = 10):
    if splits < 1 or num_samples < splits:
      raise ValueError(f"Inception Score needs 1 <= splits <= num_samples, got splits={splits}, "
                       f"num_samples={num_samples}")
    self.num_samples, self.splits = num_samples, splits
    # Part j holds samples [bounds[j], bounds[j + 1]), as np.array_split divides them.
    self.bounds = np.cumsum([0] + [len(a) for a in np.array_split(np.arange(num_samples), splits)])
    self.seen = 0
    self.prob_sums = None  # [splits, C]
    self.plogp_sums = np.zeros(splits)

  def update(self, logits: np.ndarray) -> None:
    """Adds logits [B, C] of the next B samples (samples past num_samples are ignored)."""
    logits = np.asarray(logits, np.float64)
    logits = logits[:max(self.num_samples - self.seen, 0)]
    if self.prob_sums is None:
      self.prob_sums = np.zeros((self.splits, logits.shape[-1]))
    shifted = logits - logits.max(axis=-1, keepdims=True)
    log_p = shifted - np.log(np.sum(np.exp(shifted), axis=-1, keepdims=True))
    p = np.exp(log_p)
    part = np.searchsorted(self.bounds, self.seen + np.arange(len(p)), side="right") - 1
    np.add.at(self.prob_sums, part, p)
    np.add.at(self.plogp_sums, part, np.sum(p * log_p, axis=-1))
    self.seen += len(p)

  def result(self) -> tuple[float, float]:
    """(mean, std) of exp(mean KL) over the parts; needs all num_samples seen."""
    if self.seen != self.num_samples:
      raise ValueError(f"Inception Score expected {self.num_samples} samples, saw {self.seen}")
    counts = np.diff(self.bounds)[:, None]
    marginal = self.prob_sums / counts
    with np.errstate(divide="ignore", invalid="ignore"):
      cross = np.where(self.prob_sums > 0, self.prob_sums * np.log(marginal), 0.0).sum(axis=-1)
    scores = np.exp((self.plogp_sums - cross) / counts[:, 0])
    return float(np.mean(scores)), float(np.std(scores))


def inception_score(logits: np.ndarray, *, splits: int = 10) -> tuple[float, float]:
  """(mean, std) IS of logits [N, C] held in memory."""
  stream = StreamingInceptionScore(len(logits), splits=splits)
  stream.update(logits)
  return stream.result()
