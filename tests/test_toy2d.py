"""ddss_jax.problems.toy2d: the cached eps-model is checked against the settings it was trained
with before it is used (the MNIST and pretrained problems: test_mnist.py, test_pretrained.py)."""

import json

import jax
import numpy as np
import pytest

from configs import tiny
from ddss_jax.problems import toy2d as toy2d_problem
from ddss_jax.samplers import schedules
from ddss_jax.settings import from_group


def test_a_cached_toy_model_trained_with_other_settings_is_named(tmp_path):
  cfg = from_group(toy2d_problem.Config, tiny.get_config().toy2d)
  path = tmp_path / "toy2d_eps_model.msgpack"
  path.write_bytes(b"never read")
  settings = {"schedule": "linear", "num_timesteps": 500, "num_modes": cfg.num_modes,
              "radius": cfg.radius, "std": cfg.std, "model_width": cfg.model_width + 1,
              "model_depth": cfg.model_depth}
  (tmp_path / "toy2d_eps_model.msgpack.json").write_text(json.dumps(settings))
  with pytest.raises(ValueError, match=(
      rf"{path} holds an eps-model trained with other settings \(num_timesteps: 500 there, 1000 "
      rf"in the config; model_width: {cfg.model_width + 1} there, {cfg.model_width} in the "
      r"config\); use another workdir, or delete the file to retrain it")):
    toy2d_problem.build(cfg, schedules.linear_beta(1000), workdir=str(tmp_path), seed=0)


def test_the_toy_model_is_cached_with_its_settings_and_checksum(tmp_path):
  cfg = from_group(toy2d_problem.Config, tiny.get_config().toy2d)
  first = toy2d_problem.build(cfg, schedules.linear_beta(1000), workdir=str(tmp_path), seed=0)
  assert sorted(p.name for p in tmp_path.iterdir()) == [
      "toy2d_eps_model.msgpack", "toy2d_eps_model.msgpack.json", "toy2d_eps_model.msgpack.sha256"]
  again = toy2d_problem.build(cfg, schedules.linear_beta(1000), workdir=str(tmp_path), seed=0)
  assert jax.tree.all(jax.tree.map(np.array_equal, first.model_params, again.model_params))
  assert not first.weights  # trained by the run itself: nothing to record
