"""The main job's outputs are unchanged to the bit: `configs/mnist_tiny.py` gives the committed
results.json and sampler.json (tests/golden/mnist_tiny/, re-recorded from a run of the unchanged
code when the shipped UNet was retrained), and a bad config stops before anything is written."""

import json
import os
import subprocess
import sys

from configs import mnist_tiny
from ddss_jax import experiment, main

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
GOLDEN = os.path.join(ROOT, "tests", "golden", "mnist_tiny")


def _without_paths(results):
  """results.json less the weights files' absolute paths (their sha256 stays)."""
  for entry in results.get("weights", {}).values():
    entry.pop("path")
  return results


def test_mnist_tiny_gives_the_golden_files(tmp_path):
  """XLA:CPU on this project's machines; another CPU or XLA version may round differently, and
  then these files are re-recorded from a run of the unchanged code, never edited by hand."""
  experiment.train_and_evaluate(mnist_tiny.get_config(), str(tmp_path))
  with open(os.path.join(GOLDEN, "sampler.json"), "rb") as f, \
       open(tmp_path / "sampler.json", "rb") as g:
    assert g.read() == f.read(), "sampler.json differs from tests/golden/mnist_tiny/"
  with open(os.path.join(GOLDEN, "results.json")) as f, open(tmp_path / "results.json") as g:
    assert _without_paths(json.load(g)) == _without_paths(json.load(f))


def test_bad_config_value_stops_before_anything_is_written(tmp_path):
  workdir = tmp_path / "run"
  run = subprocess.run(
      [sys.executable, "-m", "ddss_jax.main", "--config=configs/mnist_tiny.py",
       f"--workdir={workdir}", "--config.sampler.family=ggdm+nope"],
      cwd=ROOT, capture_output=True, text=True, check=False)
  assert run.returncode == 1
  assert "config.sampler.family='ggdm+nope': valid choices: ['ddpm'" in run.stderr
  assert "Traceback" not in run.stderr
  assert not workdir.exists()


def _main_from(cwd, *args):
  """python -m ddss_jax.main ARGS run in `cwd` (outside the repository), this checkout first."""
  env = {**os.environ, "PYTHONPATH": ROOT, "JAX_PLATFORMS": "cpu"}
  return subprocess.run([sys.executable, "-m", "ddss_jax.main", *args], cwd=cwd, env=env,
                        capture_output=True, text=True, timeout=600, check=False)


def test_a_users_config_anywhere_derives_from_the_shipped_ones(tmp_path):
  """From outside the repository: a config file of one's own that imports ddss_jax.configs, run
  without --workdir (runs/<config name> here), with a command-line override."""
  (tmp_path / "my_tiny.py").write_text(
      "from ddss_jax.configs import mnist_tiny\n\n\ndef get_config():\n"
      "  config = mnist_tiny.get_config()\n  config.train.num_train_steps = 1\n  return config\n")
  run = _main_from(tmp_path, "--config=my_tiny.py", "--config.eval.num_samples=8")
  assert run.returncode == 0, run.stderr[-3000:]
  assert "workdir: runs/my_tiny (the default; --workdir=DIR to choose)" in run.stdout
  results = json.load(open(tmp_path / "runs" / "my_tiny" / "results.json"))
  assert results["train_steps"] == 1
  assert json.load(open(tmp_path / "runs" / "my_tiny" / "config.json"))["eval"]["num_samples"] == 8


def test_a_shipped_config_by_name(tmp_path):
  assert main.config_path("cifar10") == os.path.join(ROOT, "configs", "cifar10.py")
  assert main.config_path("cifar10:x") == os.path.join(ROOT, "configs", "cifar10.py") + ":x"
  assert main.config_path("configs/cifar10.py") == "configs/cifar10.py"  # a path stays a path
  assert {"cifar10", "default", "lsun_church", "mnist", "mnist_tiny"} <= set(
      main.shipped_config_names())
  # The name resolves before config_flags loads it: a bad override is named as for a path.
  run = _main_from(tmp_path, "--config=mnist_tiny", "--config.sampler.family=ggdm+nope")
  assert run.returncode == 1 and "config.sampler.family='ggdm+nope'" in run.stderr
  assert "workdir: runs/mnist_tiny" in run.stdout and not (tmp_path / "runs").exists()
  run = _main_from(tmp_path, "--config=cifar100")
  assert run.returncode == 1
  assert ("--config=cifar100: no file 'cifar100' here and no shipped config of that name; "
          "shipped configs: ['cifar10', 'default', 'imagenet64'") in run.stderr
