"""Tests of ddss_jax.data.tfds_images: no network, no TensorFlow.

Two kinds of data: tfds.testing.mock_data (MockPolicy.USE_CODE: random uint8 images from the
builder's features, a fixed image per index; LSUN's have random sizes), and a tiny CIFAR-10
really prepared in the ArrayRecord format in a temporary directory (the cifar10 builder with its
examples replaced by known PNG images), so that real files, missing_data_message's "present"
answer and exact pixel values are checked too.
"""

import io

import jax
import numpy as np
import PIL.Image
import pytest
import tensorflow_datasets as tfds

from ddss_jax.data import tfds_images
from ddss_jax.data.tfds_images import TFDSImageSource, center_crop_and_resize

NUM_MOCK = 7


def mock_data():
  return tfds.testing.mock_data(num_examples=NUM_MOCK, policy=tfds.testing.MockPolicy.USE_CODE)


def all_images(source, **kwargs):
  return np.concatenate(list(source.iterate(3, **kwargs)))


# --- Preprocessing, on NumPy arrays -------------------------------------------------------------

@pytest.mark.parametrize("height,width", [(6, 10), (10, 6), (7, 12), (6, 6)])
def test_center_crop_keeps_the_centre(height, width):
  rows, cols = np.meshgrid(np.arange(height), np.arange(width), indexing="ij")
  image = np.stack([rows, cols, rows + cols], axis=-1).astype(np.uint8)
  side = min(height, width)
  top, left = (height - side) // 2, (width - side) // 2
  out = center_crop_and_resize(image, side)  # no resampling at the crop's own size
  np.testing.assert_array_equal(out[..., 0], rows[top:top + side, left:left + side])
  np.testing.assert_array_equal(out[..., 1], cols[top:top + side, left:left + side])
  # The centre of the crop is the centre of the image (within half a pixel).
  assert abs(out[..., 0].mean() - (height - 1) / 2) <= 0.5
  assert abs(out[..., 1].mean() - (width - 1) / 2) <= 0.5


def test_crop_then_resize_of_a_centred_square():
  """A bright square centred in a wide image stays centred after crop and downsampling."""
  image = np.zeros((40, 80, 3), np.uint8)
  image[10:30, 30:50] = 255
  out = center_crop_and_resize(image, 8).astype(np.float64)[..., 0]
  np.testing.assert_allclose(out, out[::-1, ::-1], atol=1)  # symmetric about the centre
  assert out[3:5, 3:5].min() > 200 and out[0, :].max() < 40 and out[:, 0].max() < 40


def test_downsampling_is_antialiased():
  """A 1-pixel checkerboard averages to grey; nearest-neighbour would keep 0 or 255."""
  checker = ((np.indices((64, 64)).sum(0) % 2) * 255).astype(np.uint8)
  out = center_crop_and_resize(np.stack([checker] * 3, -1), 16)
  assert out.shape == (16, 16, 3) and out.dtype == np.uint8
  assert np.abs(out[2:-2, 2:-2].astype(int) - 127).max() <= 3


def test_upsampling_and_no_crop():
  image = np.full((4, 4, 3), 77, np.uint8)
  np.testing.assert_array_equal(center_crop_and_resize(image, 9, center_crop=False), 77)


def test_grayscale_and_alpha_become_rgb():
  gray = np.arange(16, dtype=np.uint8).reshape(4, 4)
  for image in (gray, gray[..., None]):
    out = center_crop_and_resize(image, 4)
    assert out.shape == (4, 4, 3)
    np.testing.assert_array_equal(out, np.stack([gray] * 3, -1))
  rgba = np.concatenate([np.stack([gray] * 3, -1), np.zeros((4, 4, 1), np.uint8)], -1)
  np.testing.assert_array_equal(center_crop_and_resize(rgba, 4), np.stack([gray] * 3, -1))
  with pytest.raises(ValueError, match="expected an image"):
    center_crop_and_resize(np.zeros((4, 4, 2), np.uint8), 4)


# --- Index sampling and sharding ----------------------------------------------------------------

def test_sample_indices_small_population_matches_array_source():
  key = jax.random.PRNGKey(3)
  np.testing.assert_array_equal(tfds_images.sample_indices(key, 50, 10),
                                jax.random.choice(key, 50, (10,), replace=False))


def test_sample_indices_large_population():
  population = 2 * tfds_images.PERMUTATION_LIMIT
  key = jax.random.PRNGKey(0)
  idx = tfds_images.sample_indices(key, population, 1000)
  assert idx.shape == (1000,) and len(np.unique(idx)) == 1000
  assert idx.min() >= 0 and idx.max() < population
  np.testing.assert_array_equal(idx, tfds_images.sample_indices(key, population, 1000))
  assert not np.array_equal(idx, tfds_images.sample_indices(jax.random.PRNGKey(1), population,
                                                            1000))


@pytest.mark.parametrize("total,count", [(7, 2), (10, 3), (2, 4), (0, 2)])
def test_shard_bounds_partition_in_order(total, count):
  bounds = [tfds_images.shard_bounds(total, i, count) for i in range(count)]
  covered = [i for start, stop in bounds for i in range(start, stop)]
  assert covered == list(range(total))
  sizes = [stop - start for start, stop in bounds]
  assert max(sizes) - min(sizes) <= 1


# --- Names and missing data ---------------------------------------------------------------------

def test_unknown_name_lists_valid_choices():
  with pytest.raises(ValueError, match="unknown image dataset 'cifar100'.*cifar10.*lsun_church"):
    TFDSImageSource("cifar100", "train")
  with pytest.raises(ValueError, match="valid choices"):
    tfds_images.missing_data_message("celeba", "train", "/nonexistent")


@pytest.mark.parametrize("name", sorted(tfds_images.DATASETS))
def test_missing_data_message_on_an_empty_dir(name, tmp_path):
  message = tfds_images.missing_data_message(name, "train", str(tmp_path))
  spec = tfds_images.DATASETS[name]
  for part in (repr(name), spec.tfds_name, "'train'", str(tmp_path), "tfds build",
               "--file_format=array_record"):
    assert part in message
  if name.startswith("lsun"):
    assert "tensorflow-io" in message


def test_source_on_missing_data_raises_the_message(tmp_path):
  with pytest.raises(FileNotFoundError, match="is not prepared.*tfds build cifar10"):
    TFDSImageSource("cifar10", "train", data_dir=str(tmp_path))


# --- Mocked tfds --------------------------------------------------------------------------------

@pytest.mark.parametrize("name,image_size,expected", [
    ("cifar10", None, 32), ("cifar10", 16, 16), ("lsun_church", None, 128),
    ("lsun_church", 16, 16)])
def test_shapes_dtype_range(name, image_size, expected):
  with mock_data():
    source = TFDSImageSource(name, "train", image_size=image_size)
    assert source.num_examples == NUM_MOCK
    assert source.example_shape == (expected, expected, 3)
    images = all_images(source)
    batch = source.batch(jax.random.PRNGKey(0), 4)
  assert images.shape == (NUM_MOCK, expected, expected, 3) and images.dtype == np.float32
  assert batch.shape == (4, expected, expected, 3) and batch.dtype == np.float32
  assert images.min() >= -1.0 and images.max() <= 1.0 and images.std() > 0.1


def test_cifar10_values_are_the_stored_pixels_scaled():
  with mock_data():
    source = TFDSImageSource("cifar10", "train")
    raw = tfds.data_source("cifar10", split="train", download=False)
    expected = np.stack([raw[i]["image"] for i in range(NUM_MOCK)]) / 127.5 - 1.0
    np.testing.assert_allclose(all_images(source), expected, atol=1e-6)


def test_lsun_mock_sizes_vary_and_are_cropped_and_resized():
  with mock_data():
    raw = tfds.data_source("lsun/church_outdoor", split="train", download=False)
    shapes = {raw[i]["image"].shape for i in range(NUM_MOCK)}
    source = TFDSImageSource("lsun_church", "train", image_size=16)
    expected = np.stack([center_crop_and_resize(raw[i]["image"], 16) for i in range(NUM_MOCK)])
    np.testing.assert_allclose(all_images(source), expected / 127.5 - 1.0, atol=1e-6)
  assert len(shapes) > 1 and any(h != w for h, w, _ in shapes)


def test_iteration_is_deterministic_and_batches_are_in_order():
  with mock_data():
    source = TFDSImageSource("lsun_church", "train", image_size=16)
    first, second = list(source.iterate(3)), list(source.iterate(3))
    single = all_images(TFDSImageSource("lsun_church", "train", image_size=16))
  assert [len(b) for b in first] == [3, 3, 1]
  np.testing.assert_array_equal(np.concatenate(first), np.concatenate(second))
  np.testing.assert_array_equal(np.concatenate(first), single)


@pytest.mark.parametrize("num_examples", [None, 5])
def test_two_shards_are_disjoint_and_cover_in_order(num_examples):
  with mock_data():
    full = all_images(TFDSImageSource("cifar10", "train", image_size=8), num_examples=num_examples)
    shards = [all_images(TFDSImageSource("cifar10", "train", image_size=8, process_index=i,
                                         process_count=2), num_examples=num_examples)
              for i in range(2)]
  total = NUM_MOCK if num_examples is None else num_examples
  assert len(full) == total and abs(len(shards[0]) - len(shards[1])) <= 1
  np.testing.assert_array_equal(np.concatenate(shards), full)
  flat = [s.reshape(len(s), -1) for s in shards]
  assert not any((a == b).all() for a in flat[0] for b in flat[1])  # no example twice


def test_batch_is_fixed_by_the_key():
  with mock_data():
    source = TFDSImageSource("cifar10", "train", image_size=8)
    a = source.batch(jax.random.PRNGKey(5), 4)
    b = source.batch(jax.random.PRNGKey(5), 4)
    c = source.batch(jax.random.PRNGKey(6), 4)
    halves = [source.batch(jax.random.PRNGKey(5), 4, slice(0, 2)),
              source.batch(jax.random.PRNGKey(5), 4, slice(2, 4))]
    full = all_images(source)
    with pytest.raises(ValueError, match="batch of 8"):
      source.batch(jax.random.PRNGKey(0), NUM_MOCK + 1)
  np.testing.assert_array_equal(a, b)
  np.testing.assert_array_equal(np.concatenate(halves), a)  # each process reads only its rows
  assert not np.array_equal(a, c)
  idx = np.asarray(jax.random.choice(jax.random.PRNGKey(5), NUM_MOCK, (4,), replace=False))
  np.testing.assert_array_equal(a, full[idx])  # the same examples ArraySource would draw


def test_a_carved_validation_split_is_never_drawn_again():
  with mock_data():
    source = TFDSImageSource("cifar10", "train", image_size=8)
    full = all_images(source)
    rest, held = source.carve(2, jax.random.PRNGKey(3))
    rest_all = all_images(rest)
    drawn = rest.batch(jax.random.PRNGKey(0), NUM_MOCK - 2)
    again, held_again = rest.carve(1, jax.random.PRNGKey(4))  # a split of the rest
    with pytest.raises(ValueError, match="a split of 7 from cifar10/train, which has 7"):
      source.carve(NUM_MOCK, jax.random.PRNGKey(0))
  chosen = np.sort(tfds_images.sample_indices(jax.random.PRNGKey(3), NUM_MOCK, 2))
  np.testing.assert_array_equal(held, full[chosen])  # what sample_indices picks, in order
  np.testing.assert_array_equal(rest_all, np.delete(full, chosen, axis=0))
  assert (rest.num_examples, again.num_examples, source.num_examples) == (5, 4, NUM_MOCK)
  key = lambda x: x.tobytes()
  assert sorted(map(key, drawn)) == sorted(map(key, rest_all))  # the rest, every one once
  assert not {key(x) for x in held} & {key(x) for x in np.concatenate([rest_all, held_again])}
  assert sorted(map(key, np.concatenate([all_images(again), held_again]))) == sorted(
      map(key, rest_all))


def test_bad_arguments():
  with mock_data():
    with pytest.raises(ValueError, match="process_index"):
      TFDSImageSource("cifar10", "train", process_index=2, process_count=2)
    with pytest.raises(ValueError, match="image_size"):
      TFDSImageSource("cifar10", "train", image_size=0)
    source = TFDSImageSource("cifar10", "train")
    with pytest.raises(ValueError, match="num_examples"):
      next(source.iterate(2, num_examples=NUM_MOCK + 1))


# --- A really prepared dataset (ArrayRecord files written without TensorFlow) -------------------

def _png(image):
  buffer = io.BytesIO()
  PIL.Image.fromarray(image).save(buffer, format="PNG")
  buffer.seek(0)
  return buffer  # tfds encodes arrays with TensorFlow, but takes encoded files as they are


def _prepare_tiny_cifar10(data_dir, images_by_split):
  cifar10 = type(tfds.builder("cifar10", data_dir=data_dir))

  class TinyCifar10(cifar10, skip_registration=True):
    name = "cifar10"

    def _split_generators(self, dl_manager):
      return {split: self._generate(images) for split, images in images_by_split.items()}

    def _generate(self, images):
      for i, image in enumerate(images):
        yield i, {"id": f"tiny_{i}", "image": _png(image), "label": i % 10}

  TinyCifar10(data_dir=data_dir, file_format="array_record").download_and_prepare()


def test_prepared_dataset_end_to_end(tmp_path):
  rng = np.random.default_rng(0)
  train = rng.integers(0, 256, (5, 32, 32, 3), dtype=np.uint8)
  data_dir = str(tmp_path)
  _prepare_tiny_cifar10(data_dir, {"train": train, "test": train[:2]})

  assert tfds_images.missing_data_message("cifar10", "train", data_dir) is None
  assert tfds_images.missing_data_message("cifar10", "test", data_dir) is None
  message = tfds_images.missing_data_message("cifar10", "validation", data_dir)
  assert "no such split" in message and "['test', 'train']" in message

  source = TFDSImageSource("cifar10", data_dir=data_dir)  # the reference split: train
  assert source.split == "train" and source.num_examples == 5
  images = all_images(source)
  # tfds stores examples in a hashed order: compare as sets of exact images.
  stored = np.round((images + 1.0) * 127.5).astype(np.uint8)
  assert sorted(map(bytes, stored)) == sorted(map(bytes, train))
  np.testing.assert_allclose(images, stored / 127.5 - 1.0, atol=1e-6)

  (tmp_path / "cifar10" / "3.0.2" / "cifar10-train.array_record-00000-of-00001").unlink()
  message = tfds_images.missing_data_message("cifar10", "train", data_dir)
  assert "split's files are not" in message
