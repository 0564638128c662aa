"""The FID Inception port: parity with torch-fidelity, the resizes, and the weights plumbing.

The parity tests compare against torch-fidelity's FeatureExtractorInceptionV3 and
interpolate_bilinear_2d_like_tensorflow1x (the TF1 FID graph ported to PyTorch) and torch's
F.interpolate. They need torch and torch-fidelity and are skipped, saying so, where these are not
installed. No real weights are needed: the network parity runs on random full-width weights.
"""

import hashlib
import http.server
import importlib
import importlib.util
import os
import subprocess
import sys
import threading
import types
import urllib.error

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax.traverse_util import flatten_dict

from ddss_jax import weights
from ddss_jax.models import inception, inception_weights

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
IMAGE_SIZES = [(32, 32), (80, 64)]  # [H, W] of the parity inputs: both are resized to 299
OUTPUTS = ("pool3", "logits_unbiased", "logits")  # torch-fidelity's "2048", ... in this order


def _torch():
  return pytest.importorskip("torch", reason="parity needs torch: pip install -e '.[parity]'")


def _torch_fidelity():
  """torch-fidelity's inceptionv3 and interpolation submodules.

  Its package __init__ imports torchvision (for other feature extractors), which has no wheel to
  match torch's CPU build here; the two submodules need only torch, so where the normal import
  fails they are imported under a bare package module.
  """
  _torch()
  try:
    importlib.import_module("torch_fidelity")
  except ImportError:
    spec = importlib.util.find_spec("torch_fidelity")
    if spec is None:
      pytest.skip("parity needs torch-fidelity: pip install --no-deps torch-fidelity")
    bare = types.ModuleType("torch_fidelity")
    bare.__path__ = list(spec.submodule_search_locations)
    sys.modules["torch_fidelity"] = bare
  from torch_fidelity import feature_extractor_inceptionv3, interpolate_compat_tensorflow
  return feature_extractor_inceptionv3, interpolate_compat_tensorflow


def _random_state_dict(seed: int) -> dict[str, np.ndarray]:
  """Random full-width weights in the pytorch-fid layout; convs scaled by 1/sqrt(fan-in)."""
  rng = np.random.default_rng(seed)
  state = {}
  for path, leaf in flatten_dict(inception.variables_template()).items():
    key, shape = inception_weights.torch_key(path), leaf.shape
    if path[-1] == "kernel" and len(shape) == 4:  # HWIO -> OIHW
      fan_in = np.prod(shape[:3])
      value = rng.normal(size=(shape[3], shape[2], shape[0], shape[1])) / np.sqrt(fan_in)
    elif path[-1] == "kernel":  # [in, out] -> [out, in]
      value = rng.normal(size=shape[::-1]) / np.sqrt(shape[0])
    elif path[-1] in ("mean", "bias"):
      value = rng.normal(0.0, 0.2, shape)
    else:  # BatchNorm scale and running variance: positive
      value = rng.uniform(0.5, 1.5, shape)
    state[key] = value.astype(np.float32)
  return state


@pytest.fixture(scope="module")
def random_pth(tmp_path_factory):
  torch = _torch()
  path = tmp_path_factory.mktemp("inception") / "random_inception.pth"
  torch.save({k: torch.from_numpy(v) for k, v in _random_state_dict(0).items()}, path)
  return str(path)


def _calibrate(reference, calibration_images, torch):
  """Sets the running statistics from calibration images, then perturbs them (mean by 0.1 std,
  variance by a factor in [0.7, 1.4]): random weights alone blow up or wash out the features
  over 40 layers; calibrated ones keep them O(1)-O(100) and input-dependent."""
  bns = [m for m in reference.modules() if isinstance(m, torch.nn.BatchNorm2d)]
  for bn in bns:
    bn.reset_running_stats()
    bn.momentum = None  # cumulative average over the calibration batches
  reference.train()
  with torch.no_grad():
    for images in calibration_images:
      reference(torch.from_numpy(images))
  reference.eval()
  generator = torch.Generator().manual_seed(0)
  with torch.no_grad():
    for bn in bns:
      bn.running_mean += 0.1 * bn.running_var.sqrt() * torch.randn(bn.running_mean.shape,
                                                                   generator=generator)
      bn.running_var *= torch.empty(bn.running_var.shape).uniform_(0.7, 1.4, generator=generator)


@pytest.mark.parity
def test_parity_with_torch_fidelity_on_random_weights(random_pth, tmp_path):
  torch = _torch()
  feature_extractor, _ = _torch_fidelity()
  torch.manual_seed(0)
  reference = feature_extractor.FeatureExtractorInceptionV3(
      "inception-v3-compat", ["2048", "logits_unbiased", "logits"],
      feature_extractor_weights_path=random_pth)
  rng = np.random.default_rng(1)
  _calibrate(reference, [rng.integers(0, 256, (2, 3, *hw), dtype=np.uint8) for hw in IMAGE_SIZES],
             torch)
  calibrated = tmp_path / "calibrated.pth"  # with num_batches_tracked, which the port ignores
  torch.save(reference.state_dict(), calibrated)
  apply = inception.features_fn(inception_weights.load_weights(str(calibrated), verify=False))
  for hw in IMAGE_SIZES:
    pixels = rng.integers(0, 256, (3, 3, *hw), dtype=np.uint8)
    with torch.no_grad():
      want = dict(zip(OUTPUTS, (t.numpy() for t in reference(torch.from_numpy(pixels)))))
    got = apply(pixels.transpose(0, 2, 3, 1).astype(np.float32) / 127.5 - 1)
    for name in OUTPUTS:
      # float32 sums over 40 layers in a different order (XLA vs oneDNN): errors of about
      # 1e-6 of the largest activation; entries near zero need that absolute allowance.
      atol = 1e-5 * np.abs(want[name]).max()
      # The test means something: features differ between images far beyond the tolerance.
      assert np.std(want[name], axis=0).mean() > 100 * atol
      np.testing.assert_allclose(np.asarray(got[name]), want[name], rtol=1e-4, atol=atol,
                                 err_msg=f"{name} at input size {hw}")


RESIZES = [((32, 32), (299, 299)), ((80, 64), (29, 101)), ((310, 300), (299, 299))]


@pytest.mark.parity
@pytest.mark.parametrize("in_hw,out_hw", RESIZES)
def test_tf1_resize_matches_torch_fidelity(in_hw, out_hw):
  torch = _torch()
  _, interpolate = _torch_fidelity()
  x = np.random.default_rng(2).uniform(0, 255, (2, 3, *in_hw)).astype(np.float32)
  want = interpolate.interpolate_bilinear_2d_like_tensorflow1x(
      torch.from_numpy(x), size=out_hw, align_corners=False).numpy()
  got = inception.resize_bilinear_tf1(jnp.asarray(x.transpose(0, 2, 3, 1)), height=out_hw[0],
                                      width=out_hw[1])
  np.testing.assert_allclose(np.asarray(got).transpose(0, 3, 1, 2), want, rtol=0, atol=1e-4)


@pytest.mark.parity
@pytest.mark.parametrize("in_hw,out_hw", RESIZES)
def test_pytorch_fid_resize_matches_torch_interpolate(in_hw, out_hw):
  torch = _torch()
  x = np.random.default_rng(3).uniform(0, 255, (2, 3, *in_hw)).astype(np.float32)
  want = torch.nn.functional.interpolate(torch.from_numpy(x), size=out_hw, mode="bilinear",
                                         align_corners=False).numpy()
  got = inception.resize_bilinear_torch(jnp.asarray(x.transpose(0, 2, 3, 1)), height=out_hw[0],
                                        width=out_hw[1])
  # Pixel values up to 255: 1e-4 is a few float32 ulps (the weights are summed in another order).
  np.testing.assert_allclose(np.asarray(got).transpose(0, 3, 1, 2), want, rtol=0, atol=1e-4)


def _random_variables(*, width: float, seed: int):
  """Kernels ~ N(0, 1 / fan-in), BatchNorm the identity, biases 0 (from numpy: jitting
  FIDInceptionV3.init costs half a minute of compiling random draws on CPU)."""
  rng = np.random.default_rng(seed)

  def fill(path, leaf):
    name = path[-1].key
    if name == "kernel":
      return (rng.normal(size=leaf.shape) / np.sqrt(np.prod(leaf.shape[:-1]))).astype(np.float32)
    return np.full(leaf.shape, 1.0 if name in ("scale", "var") else 0.0, np.float32)
  return jax.tree_util.tree_map_with_path(fill, inception.variables_template(width=width))


@pytest.mark.slow
@pytest.mark.parametrize("preprocess", inception.PREPROCESS_CHOICES)
def test_width_reduced_network_shapes_and_gradient(preprocess):
  width = 1 / 16
  model = inception.FIDInceptionV3(width=width, preprocess=preprocess)
  x = jax.random.uniform(jax.random.key(0), (2, 20, 24, 3), minval=-1.0, maxval=1.0)
  variables = _random_variables(width=width, seed=4)
  assert set(variables) == {"params", "batch_stats"}
  out = jax.jit(model.apply)(variables, x)
  pool3_dim = sum(inception.scaled(c, width) for c in (320, 384, 384, 384, 384, 192))
  assert out["pool3"].shape == (2, pool3_dim)
  assert out["logits"].shape == out["logits_unbiased"].shape == (2, inception.NUM_LOGITS)
  grad = jax.jit(jax.grad(lambda x: jnp.sum(model.apply(variables, x)["pool3"] ** 2)))(x)
  assert grad.shape == x.shape
  assert np.all(np.isfinite(grad)) and np.any(grad != 0)


def test_convolutions_and_fc_run_in_full_float32():
  # The backend default is TF32 on NVIDIA GPUs, too coarse for reported FIDs (docs/performance.md).
  variables = _random_variables(width=1 / 16, seed=5)
  x = np.zeros((1, 8, 8, 3), np.float32)
  for precision, want in ((jax.lax.Precision.HIGHEST, (jax.lax.Precision.HIGHEST,) * 2),
                          (None, None)):
    jaxpr = jax.make_jaxpr(inception.FIDInceptionV3(width=1 / 16, precision=precision).apply)(
        variables, x)
    products = [e for e in jaxpr.jaxpr.eqns
                if e.primitive.name in ("conv_general_dilated", "dot_general")]
    assert len(products) == 95  # 94 convolutions and the fc
    assert all(e.params["precision"] == want for e in products)


def test_torch_key_mapping():
  assert (inception_weights.torch_key(("params", "Mixed_5b", "branch1x1", "conv", "kernel"))
          == "Mixed_5b.branch1x1.conv.weight")
  assert (inception_weights.torch_key(("batch_stats", "Mixed_7c", "branch_pool", "bn", "mean"))
          == "Mixed_7c.branch_pool.bn.running_mean")
  assert inception_weights.torch_key(("params", "fc", "kernel")) == "fc.weight"
  assert (inception_weights.torch_key(("params", "Conv2d_1a_3x3", "bn", "scale"))
          == "Conv2d_1a_3x3.bn.weight")
  assert len(flatten_dict(inception.variables_template())) == 472  # 94 BasicConv2d x 5 + fc x 2


def test_bad_preprocess_names_the_choices():
  with pytest.raises(ValueError, match=r"unknown Inception preprocess 'keras'; valid choices: "
                                       r"\['tf', 'pytorch_fid'\]"):
    inception.FIDInceptionV3(preprocess="keras")
  with pytest.raises(ValueError, match="'TF'"):
    inception.features_fn({}, preprocess="TF")


def test_missing_weights_say_which_file_where_to_get_it_and_where_to_put_it(tmp_path,
                                                                           monkeypatch):
  monkeypatch.setenv(inception_weights.CACHE_ENV_VAR, str(tmp_path / "cache"))
  missing = str(tmp_path / "nowhere" / inception_weights.WEIGHTS_FILENAME)
  with pytest.raises(FileNotFoundError) as info:
    inception_weights.ensure_weights(missing)
  message = str(info.value)
  for part in (missing, inception_weights.WEIGHTS_URL,
               str(tmp_path / "cache" / inception_weights.WEIGHTS_FILENAME),
               "inception_weights", "python -m ddss_jax.tools.convert_inception"):
    assert part in message, part
  assert inception_weights.missing_weights_message(missing) == message
  with pytest.raises(FileNotFoundError, match="nowhere"):
    inception_weights.load_weights(missing)

  def no_internet(dst):
    raise urllib.error.URLError("no route to host")
  monkeypatch.setattr(inception_weights, "download_weights", no_internet)
  with pytest.raises(FileNotFoundError, match="download failed.*no route to host") as info:
    inception_weights.ensure_weights(None)  # the cache's copy is missing too
  assert inception_weights.default_weights_path() in str(info.value)

  present = tmp_path / "cache" / inception_weights.WEIGHTS_FILENAME
  present.parent.mkdir()
  present.write_bytes(b"weights")
  assert inception_weights.missing_weights_message(None) is None
  assert inception_weights.ensure_weights(None) == str(present)
  assert inception_weights.ensure_weights(str(present)) == str(present)


def test_wrong_files_fail_with_clear_errors(tmp_path):
  pth = tmp_path / "impostor.pth"
  pth.write_bytes(b"not the inception weights")
  with pytest.raises(ValueError, match=rf"sha256 {weights.sha256_of(str(pth))}, expected one "
                                       "starting with 6726825d"):
    inception_weights.load_weights(str(pth))
  msgpack = tmp_path / "converted.msgpack"
  msgpack.write_bytes(b"also not")
  with pytest.raises(FileNotFoundError, match=r"converted.msgpack.sha256 .* does not exist"):
    inception_weights.load_weights(str(msgpack))
  (tmp_path / "converted.msgpack.sha256").write_text("0" * 64 + "  converted.msgpack\n")
  with pytest.raises(ValueError, match="expected one starting with 0000"):
    inception_weights.load_weights(str(msgpack))
  with pytest.raises(ValueError, match=r"missing keys \['Conv2d_1a_3x3.bn.bias'"):
    inception_weights.from_torch_state_dict({})


def test_a_tampered_converted_file_is_refused_and_another_width_named(tmp_path):
  path = str(tmp_path / "inception_w0125.msgpack")
  digest = inception_weights.save_converted(inception.variables_template(width=0.125), path)
  assert inception_weights.load_weights(path, width=0.125)["params"]  # verified against the sidecar
  with pytest.raises(ValueError, match=r"inception_w0125.msgpack does not hold the expected "
                                       r"network: batch_stats/Conv2d_1a_3x3/bn/mean has shape "
                                       r"\(4,\), expected \(8,\).*not the network of width 0.25"):
    inception_weights.load_weights(path, width=0.25)
  data = bytearray(open(path, "rb").read())
  data[len(data) // 2] ^= 0xFF
  open(path, "wb").write(bytes(data))
  with pytest.raises(ValueError) as error:
    inception_weights.load_weights(path, width=0.125)
  assert str(error.value).startswith(
      f"{path} has sha256 {weights.sha256_of(path)}, expected one starting with {digest}")


@pytest.mark.slow
@pytest.mark.parity
def test_msgpack_conversion_round_trip_equals_pth(random_pth, tmp_path):
  dst = tmp_path / "inception_fid.msgpack"
  result = subprocess.run(
      [sys.executable, "-m", "ddss_jax.tools.convert_inception", f"--src={random_pth}",
       f"--dst={dst}", "--noverify"],
      cwd=REPO_ROOT, capture_output=True, text=True, timeout=120, check=False)
  assert result.returncode == 0, result.stderr[-2000:]
  digest = weights.sha256_of(str(dst))
  assert f"sha256 {digest}" in result.stdout
  assert (tmp_path / "inception_fid.msgpack.sha256").read_text().split()[0] == digest
  from_msgpack = flatten_dict(inception_weights.load_weights(str(dst)))  # checked by the sidecar
  from_pth = flatten_dict(inception_weights.load_weights(random_pth, verify=False))
  assert from_msgpack.keys() == from_pth.keys()
  for key, value in from_pth.items():
    np.testing.assert_array_equal(from_msgpack[key], value, err_msg="/".join(key))


@pytest.fixture(name="server")
def fixture_server():
  """An HTTP server on 127.0.0.1 serving {path: bytes} (set its .files); 404 for the rest."""
  files = {}

  class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):  # pylint: disable=invalid-name
      if self.path not in files:
        self.send_error(404)
        return
      self.send_response(200)
      self.send_header("Content-Length", str(len(files[self.path])))
      self.end_headers()
      self.wfile.write(files[self.path])

    def log_message(self, *args):
      del args

  httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
  thread = threading.Thread(target=httpd.serve_forever, daemon=True)
  thread.start()
  httpd.files = files
  httpd.url = f"http://127.0.0.1:{httpd.server_address[1]}"
  yield httpd
  httpd.shutdown()
  thread.join()


def test_the_weights_download_is_checked_and_atomic(server, tmp_path):
  data = os.urandom(3 << 20)  # several chunks of the 1 MiB reads
  server.files["/weights.pth"] = data
  digest = hashlib.sha256(data).hexdigest()
  dst = tmp_path / "cache" / "weights.pth"
  assert inception_weights.download_weights(str(dst), url=server.url + "/weights.pth",
                                            sha256_prefix=digest[:8]) == str(dst)
  assert dst.read_bytes() == data

  other = tmp_path / "cache" / "other.pth"
  with pytest.raises(ValueError, match=rf"has sha256 {digest}, expected one starting with "
                                       "6726825d; the file is corrupt or not the one named"):
    inception_weights.download_weights(str(other), url=server.url + "/weights.pth")
  with pytest.raises(urllib.error.HTTPError, match="404"):
    inception_weights.download_weights(str(other), url=server.url + "/absent.pth")
  assert sorted(os.listdir(tmp_path / "cache")) == ["weights.pth"]  # no partial file left


def test_a_failed_download_says_what_to_do(tmp_path, monkeypatch):
  monkeypatch.setenv(inception_weights.CACHE_ENV_VAR, str(tmp_path / "cache"))

  def corrupt_download(dst):
    raise ValueError(f"{dst} has sha256 00, expected one starting with 6726825d")

  monkeypatch.setattr(inception_weights, "download_weights", corrupt_download)
  with pytest.raises(FileNotFoundError) as error:
    inception_weights.ensure_weights(None)
  message = str(error.value)
  target = tmp_path / "cache" / inception_weights.WEIGHTS_FILENAME
  assert message.endswith(f"(download failed: {target} has sha256 00, expected one starting "
                          "with 6726825d)")
  assert (f"curl -L -o {inception_weights.default_weights_path()} "
          f"{inception_weights.WEIGHTS_URL}") in message
  with pytest.raises(FileNotFoundError) as error:
    inception_weights.ensure_weights(None, download=False)
  assert "download failed" not in str(error.value)
