"""Parity of the Flax FID Inception network with pytorch-fid's InceptionV3, on random weights.

CI checks parity against torch-fidelity (which runs without torchvision). pytorch-fid needs
torchvision, which costs a multi-GB CUDA build of torch on the CPU machines, so this second,
independent reference runs where torchvision is installed (e.g. a GPU host):

  pip install pytorch-fid   # and torch + torchvision
  python -m experiments.inception_parity.run [--sizes=32,64,299,512]

Builds a random state dict with the real shapes (random BatchNorm statistics so every layer
matters), loads it into pytorch-fid's InceptionV3(use_fid_inception=True) in place of the
download, and into ddss_jax's FIDInceptionV3(preprocess="pytorch_fid"), and compares pool3
features on random images of each size. Both run in float32 on the CPU (JAX at "highest" matmul
precision, so no TF32 on a GPU either).
"""

from __future__ import annotations

import json

import jax
import numpy as np
from absl import app, flags

from ddss_jax.models import inception, inception_weights

FLAGS = flags.FLAGS
flags.DEFINE_list("sizes", ["32", "64", "299", "512"], "Square input sizes to compare at.")
flags.DEFINE_integer("batch", 4, "Images per size.")


def random_state_dict(torch, model, seed: int = 0) -> dict:
  """Random tensors of model's state-dict shapes: conv weights scaled by 1/sqrt(fan-in),
  BatchNorm gamma ~ U(0.5, 1.5), beta ~ N(0, 0.1), running mean ~ N(0, 0.1), var ~ U(0.5, 1.5)."""
  generator = torch.Generator().manual_seed(seed)
  out = {}
  for key, value in model.state_dict().items():
    shape = value.shape
    if key.endswith("num_batches_tracked"):
      out[key] = value
    elif key.endswith("running_var") or (key.endswith(".weight") and len(shape) == 1):
      out[key] = 0.5 + torch.rand(shape, generator=generator)
    elif len(shape) == 1:
      out[key] = 0.1 * torch.randn(shape, generator=generator)
    else:
      fan_in = int(np.prod(shape[1:]))
      out[key] = torch.randn(shape, generator=generator) / np.sqrt(fan_in)
  return out


def main(argv):
  del argv
  import torch  # pylint: disable=import-outside-toplevel
  from pytorch_fid import inception as pf  # pylint: disable=import-outside-toplevel

  # pytorch-fid's own constructor of the FID network's torchvision skeleton (same state-dict keys).
  skeleton = pf._inception_v3(  # pylint: disable=protected-access
      num_classes=1008, aux_logits=False, weights=None)
  state = random_state_dict(torch, skeleton)
  pf.load_state_dict_from_url = lambda *args, **kwargs: state  # instead of the download
  reference = pf.InceptionV3([pf.InceptionV3.BLOCK_INDEX_BY_DIM[2048]], resize_input=True,
                             normalize_input=True, use_fid_inception=True).eval()
  variables = inception_weights.from_torch_state_dict({k: v.numpy() for k, v in state.items()
                                               if not k.endswith("num_batches_tracked")})
  ours = inception.features_fn(variables, preprocess="pytorch_fid")
  rng = np.random.default_rng(0)
  results = {}
  for size in [int(s) for s in FLAGS.sizes]:
    pixels = rng.integers(0, 256, size=(FLAGS.batch, size, size, 3)).astype(np.float32)
    with torch.no_grad():
      want = reference(torch.from_numpy(pixels.transpose(0, 3, 1, 2) / 255.0))[0]
    want = want.numpy().reshape(FLAGS.batch, -1)
    with jax.default_matmul_precision("highest"):
      got = np.asarray(ours(pixels / 127.5 - 1.0)["pool3"])
    diff = np.abs(got - want)
    results[size] = {"max_abs_diff": float(diff.max()), "max_abs_ref": float(np.abs(want).max()),
                     "max_rel_diff_over_max": float(diff.max() / np.abs(want).max()),
                     "allclose_rtol_1e-4": bool(np.allclose(got, want, rtol=1e-4,
                                                            atol=1e-4 * np.abs(want).max()))}
    print(size, json.dumps(results[size]), flush=True)
  print(json.dumps(results))


if __name__ == "__main__":
  app.run(main)
