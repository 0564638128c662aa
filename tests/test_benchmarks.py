"""The benchmark suite on tiny sizes: it runs, compiles the train step once across steps, renders
every target, and its DDIM equals diffusers' DDIMScheduler on the same exported weights."""

import pytest

from benchmarks import costs, report, suite, vs_diffusers

pytestmark = pytest.mark.slow  # end-to-end runs, subprocesses or committed results


@pytest.fixture(scope="module")
def bench():
  return costs.build(batch_size=2)


def test_suite_sections_run_and_the_train_step_compiles_once(bench, monkeypatch):
  monkeypatch.setattr(costs, "build", lambda batch_size: bench)
  results = suite.run(["gradient", "compile", "overhead", "features", "guidance"], batch=2,
                      num_steps=[2],
                      designs=["loop"], memory_steps=[], overhead_steps=2, diffusers_steps=2,
                      compile_train_steps=3, repeats=1)
  (row,) = results["gradient"]
  assert row["design"] == "loop" and row["k"] == 2
  assert row["step_s"] > 0 and row["sample_s"] > 0 and row["temp_mb"] > 0
  # The step's FLOPs: 2 model calls, 2 calls with their input gradient, features + KID.
  assert row["step_flops"] > 3 * row["sample_flops"] > 0
  assert results["compile"]["step_compiles"] == 1  # no recompilation across 3 steps
  assert [r["family"] for r in results["overhead"]] == ["ddim", costs.FAMILY]
  assert 0 < results["features"][0]["share"] < 1
  (guided,) = results["guidance"]
  assert guided["k"] == 2 and guided["ratio"] == guided["guided_step_s"] / guided["step_s"] > 0
  text = report.render([results])
  for line in ("DDSS step / K-step sampling", "compilations of the train step over 3 steps | 1",
               "ddim K=2 sampling / (K x one model call)", "feature network + KID share",
               "guided DDSS step / unconditional DDSS step"):
    assert line in text


def test_suite_rejects_unknown_sections_and_designs():
  kwargs = dict(batch=2, num_steps=[2], designs=["loop"], memory_steps=[], overhead_steps=2,
                diffusers_steps=2, compile_train_steps=1, repeats=1)
  with pytest.raises(ValueError, match=r"unknown section\(s\) \['speed'\]; valid choices"):
    suite.run(["speed"], **kwargs)
  with pytest.raises(ValueError, match=r"unknown design\(s\) \['fast'\]; valid choices"):
    suite.run(["gradient"], **dict(kwargs, designs=["fast"]))


def test_report_marks_each_target_met_or_not():
  machine = dict(backend="cpu", device_kind="cpu", device_count=1, cpu="test cpu", cpu_count=2,
                 jax="0", python="3", commit="abc", date="today")
  config = dict(batch=4, family=costs.FAMILY, stride="linear", image_bytes=2**20)
  memory = [dict(gradient="adjoint", k=k, temp=(100 + 3 * k) * 2**20, compile_s=c,
                 per_step_first=None if k == 5 else 3.0, per_step_previous=None if k == 5 else 3.0,
                 compile_ratio=c / 10.0) for k, c in ((5, 10.0), (40, 16.0))]
  gradient = [dict(design="loop", k=5, step_s=4.5, sample_s=1.0, ratio=4.5, compile_s=1.0,
                   temp_mb=10.0, step_flops=None, sample_flops=None, convolutions=3,
                   noncanonical_convolutions=0)]
  text = report.render([dict(machine=machine, config=config, section_seconds={},
                             gradient=gradient, memory=memory)])
  assert "| DDSS step / K-step sampling | 4.50 (K=5) | <= 4 | **not met** |" in text
  assert r"| at most 3.00 \|x\| | <= 8 \|x\| | met |" in text
  assert "| compile time K=40 / K=5 | 1.60 | <= 1.5 | **not met** |" in text


def test_a_run_of_some_sections_keeps_the_others_with_their_commit():
  machine = lambda commit: dict(backend="cpu", device_kind="cpu", device_count=1, cpu="test",
                                cpu_count=2, jax="0", python="3", commit=commit, date=commit)
  gradient = [dict(design="loop", k=5, step_s=3.0, sample_s=1.0, ratio=3.0, compile_s=1.0,
                   temp_mb=10.0, step_flops=None, sample_flops=None, convolutions=3,
                   noncanonical_convolutions=0)]
  earlier = dict(machine=machine("old"), config=dict(batch=4, family=costs.FAMILY,
                                                      stride="linear", image_bytes=2**20),
                 section_seconds={"gradient": 5.0}, gradient=gradient)
  later = dict(machine=machine("new"), config={}, section_seconds={"guidance": 7.0},
               guidance=[dict(k=5, step_s=1.0, guided_step_s=2.5, ratio=2.5,
                              guided_compile_s=3.0)])
  merged = report.merge(earlier, later)
  assert merged["gradient"] == earlier["gradient"] and merged["guidance"] == later["guidance"]
  assert merged["measured_at"] == {"gradient": {"commit": "old", "date": "old"},
                                   "guidance": {"commit": "new", "date": "new"}}
  assert merged["section_seconds"] == {"gradient": 5.0, "guidance": 7.0}
  text = report.render([dict(merged, memory=[])])
  assert ("| guided DDSS step / unconditional DDSS step | 2.50 (K=5) | <= 2.2 | **not met** |"
          in text)
  assert "Measured in earlier runs: gradient at commit old, old." in text


@pytest.mark.parity
@pytest.mark.skipif(vs_diffusers.missing() is not None, reason=f"parity: {vs_diffusers.missing()}")
@pytest.mark.parametrize("family", vs_diffusers.FAMILIES)
def test_samplers_equal_diffusers_schedulers_on_the_exported_unet(bench, family):
  """DDIM vs DDIMScheduler, DPM-Solver++(2M) vs DPMSolverMultistepScheduler: same weights, same
  starting noise, the same samples."""
  result = vs_diffusers.compare(bench.problem, batch_size=2, num_steps=6, repeats=1, threads=2,
                                family=family)
  assert result["max_abs_diff"] < 1e-4, result
  assert result["jax_images_per_s"] > 0 and result["torch_images_per_s"] > 0
