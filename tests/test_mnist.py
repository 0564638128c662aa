"""The embedded image default end to end at toy sizes: two DDSS steps, then a resume.

The shipped networks' quality is tested in test_classifier.py / test_unet_weights.py; here the UNet
is a random one written to tmp_path, so the test checks the pipeline, not numbers.
"""

import dataclasses
import json
import os
import shutil

import jax
import pytest

from configs import mnist_tiny
from ddss_jax import run as run_lib, samplers, weights
from ddss_jax.models import unet
from ddss_jax.problems import mnist as mnist_problem
from ddss_jax.samplers import schedules
from ddss_jax.settings import from_group


@pytest.fixture(scope="module")
def random_unet(tmp_path_factory):
  path = str(tmp_path_factory.mktemp("unet") / "random_unet.msgpack")
  weights.save_msgpack(unet.init_params(unet.MNIST_UNET, jax.random.PRNGKey(0)), path)
  return path


@pytest.mark.slow
def test_two_steps_then_a_resume_write_every_promised_file(tmp_path, random_unet):
  config = mnist_tiny.get_config()
  config.mnist.unet_weights = random_unet
  first = run_lib.train_and_evaluate(config, str(tmp_path))
  assert first["train_steps"] == 2
  config.train.num_train_steps = 3
  resumed = run_lib.train_and_evaluate(config, str(tmp_path))
  assert resumed["train_steps"] == 3
  steps = [json.loads(line)["step"] for line in open(tmp_path / "metrics.jsonl")]
  assert steps == [1, 2, 2, 3, 3]  # train lines, an eval line per run; the resume skips 1-2

  results = json.load(open(tmp_path / "results.json"))
  for role in ("baseline", "learned"):
    assert set(results[role]) == {"family", "num_steps", "kid", "kid_std", "fid", "precision",
                                  "recall", "confident_share"}
    assert 0 <= results[role]["precision"] <= 1 and 0 <= results[role]["recall"] <= 1
    assert results[role]["num_steps"] == 2
  assert results["baseline"]["family"] == "ddim"
  assert results["weights"] == {  # what the run read, to pin or compare
      "model": {"path": random_unet, "sha256": weights.sha256_of(random_unet)},
      "features": {"path": weights.shipped_path("mnist_classifier"),
                   "sha256": weights.SHIPPED["mnist_classifier"].sha256}}
  assert results["learned"]["family"] == "ggdm+pred+time"
  for name in ("samples_baseline.png", "samples_learned.png", "samples.png"):
    assert os.path.getsize(tmp_path / name) > 0
  sampler, params = samplers.load(str(tmp_path / "sampler.json"))
  assert sampler.family == "ggdm+pred+time" and sampler.num_steps == 2
  assert set(params) == set(sampler.init())
  assert json.load(open(tmp_path / "sampler.json"))["model"] == {  # the user's UNet file
      "source": random_unet, "sha256": weights.sha256_of(random_unet), "prediction": "eps"}


@pytest.mark.slow
def test_weights_paths_in_the_config_replace_the_shipped_files(tmp_path, random_unet):
  """A user's own classifier file is used instead of the shipped one: the same weights re-saved
  give the same metrics, altered weights give other metrics."""
  from ddss_jax.models import classifier
  config = mnist_tiny.get_config()
  config.mnist.unet_weights = random_unet

  def metrics_with(classifier_params):
    if classifier_params is not None:
      config.mnist.classifier_weights = str(tmp_path / "my_classifier.msgpack")
      weights.save_msgpack(classifier_params, config.mnist.classifier_weights)
    problem = mnist_problem.build(from_group(mnist_problem.Config, config.mnist),
                                   schedules.linear_beta(), seed=0)
    return problem.evaluate(problem.real_batch(jax.random.PRNGKey(0), 64))

  shipped = metrics_with(None)
  params = classifier.load_shipped_classifier()
  assert metrics_with(params) == shipped
  assert metrics_with(jax.tree.map(lambda p: 0.5 * p, params))["fid"] != shipped["fid"]


def test_a_missing_weights_file_says_so(tmp_path):
  config = mnist_tiny.get_config()
  config.mnist.unet_weights = str(tmp_path / "nope.msgpack")
  with pytest.raises(FileNotFoundError, match="nope.msgpack does not exist"):
    run_lib.train_and_evaluate(config, str(tmp_path))


def _mnist_cfg(**changes):
  return dataclasses.replace(from_group(mnist_problem.Config, mnist_tiny.get_config().mnist),
                             **changes)


def test_weights_of_another_width_are_named_not_loaded(tmp_path):
  """A UNet file of another width has the same array names: flax would load it and fail inside
  the compiled step; problems.mnist.build names the file and the first mis-shaped arrays instead."""
  narrow = dataclasses.replace(unet.MNIST_UNET, block_out_channels=(8, 16, 16))
  path = str(tmp_path / "narrow_unet.msgpack")
  weights.save_msgpack(unet.params_template(narrow), path)
  with pytest.raises(ValueError, match=rf"{path} does not hold the expected network: .*"
                                       r"conv_in/kernel has shape \(3, 3, 1, 8\), expected "
                                       r"\(3, 3, 1, 16\)"):
    mnist_problem.build(_mnist_cfg(unet_weights=path), schedules.linear_beta(), seed=0)


def test_tampered_user_weights_are_refused_by_their_sidecar(tmp_path, random_unet):
  path = str(tmp_path / "unet.msgpack")
  for suffix in ("", ".sha256"):  # the file and the sidecar save_msgpack wrote beside it
    shutil.copy(random_unet + suffix, path + suffix)
  data = bytearray(open(path, "rb").read())
  data[len(data) // 2] ^= 0xFF
  open(path, "wb").write(bytes(data))
  with pytest.raises(ValueError) as error:
    mnist_problem.build(_mnist_cfg(unet_weights=path), schedules.linear_beta(), seed=0)
  assert str(error.value).startswith(f"{path} has sha256 {weights.sha256_of(path)}, expected "
                                     f"{weights.sha256_of(random_unet)}")
