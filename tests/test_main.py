"""The main job's outputs are unchanged: `configs/mnist_tiny.py` gives the committed results.json
and sampler.json (tests/golden/mnist_tiny/, re-recorded from a run of the unchanged code when the
shipped UNet was retrained), and a bad config stops before anything is written."""

import json
import os
import subprocess
import sys

import pytest

from configs import mnist_tiny
from ddss_jax import main, run as run_lib

pytestmark = pytest.mark.slow  # end-to-end runs, subprocesses or committed results

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
GOLDEN = os.path.join(ROOT, "tests", "golden", "mnist_tiny")
# XLA:CPU rounds float32 differently in the last bits on different CPU kinds (AVX-512 or not):
# on two AMD EPYC kinds the files' floats differed by at most 7.6e-6 relative (the evaluation's
# too, not only the optimisation's), every other value equal. 1e-4 is 13x that; a learning rate
# 1% off moves 13 of sampler.json's floats past it.
RTOL, ATOL = 1e-4, 1e-7


def _leaves(tree, path=""):
  """(path, value) of every leaf of a JSON tree, lists indexed."""
  if isinstance(tree, dict):
    for key in sorted(tree):
      yield from _leaves(tree[key], f"{path}/{key}")
  elif isinstance(tree, list):
    for i, value in enumerate(tree):
      yield from _leaves(value, f"{path}[{i}]")
  else:
    yield path, tree


def assert_same_json(got, want, name):
  """The same keys, types and non-float values; floats within RTOL (ATOL near zero)."""
  got, want = dict(_leaves(got)), dict(_leaves(want))
  assert got.keys() == want.keys(), f"{name}: other fields than the golden file's"
  for path, value in want.items():
    assert type(got[path]) is type(value), f"{name}{path}: {got[path]!r}, golden {value!r}"
    if isinstance(value, float):
      assert abs(got[path] - value) <= RTOL * abs(value) + ATOL, (
          f"{name}{path}: {got[path]!r}, golden {value!r}")
    else:
      assert got[path] == value, f"{name}{path}: {got[path]!r}, golden {value!r}"


def _without_paths(results):
  """results.json less the weights files' absolute paths (their sha256 stays)."""
  for entry in results.get("weights", {}).values():
    entry.pop("path")
  return results


def test_mnist_tiny_gives_the_golden_files(tmp_path):
  """Re-record these files from a run of the unchanged code only, never by hand."""
  run_lib.train_and_evaluate(mnist_tiny.get_config(), str(tmp_path))
  for name, read in (("sampler.json", json.load),
                     ("results.json", lambda f: _without_paths(json.load(f)))):
    with open(os.path.join(GOLDEN, name)) as f, open(tmp_path / name) as g:
      assert_same_json(read(g), read(f), name)


def test_the_golden_comparison_catches_a_change():
  with open(os.path.join(GOLDEN, "sampler.json")) as f:
    golden = json.load(f)
  assert_same_json(json.loads(json.dumps(golden)), golden, "sampler.json")
  nudged = json.loads(json.dumps(golden))
  nudged["params"]["sigma"][0] *= 1 + 3 * RTOL
  for bad in (nudged, {**golden, "format": golden["format"] + "x"}, {**golden, "extra": 1}):
    try:
      assert_same_json(bad, golden, "sampler.json")
    except AssertionError:
      continue
    raise AssertionError(f"not caught: {bad}")


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
