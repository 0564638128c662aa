"""Real image datasets read through tensorflow-datasets without TensorFlow.

Records are read with `tfds.data_source` (random access to ArrayRecord files; no TensorFlow, no
tf.data) and preprocessed with NumPy and PIL only; nothing loads a whole split into memory.

Preprocessing: crop the largest centred square (LSUN only; CIFAR-10 and downsampled ImageNet are
square already), then resize to image_size x image_size with PIL's LANCZOS filter, then scale
uint8 to float32 in [-1, 1] (x / 127.5 - 1). LANCZOS (PIL's former ANTIALIAS) because it is what
StyleGAN2's dataset_tool.py `create_lsun` uses (same crop indices too), and DDPM's public LSUN
models were trained on data made by that tool, so reference statistics match their training data.
PIL widens every filter's support by the reduction factor, so downsampling is antialiased;
upsampling (e.g. CIFAR-10 at 64) is allowed. Images already at image_size are not resampled.

Preparing data needs TensorFlow and network once, on any machine, in the ArrayRecord format:
`tfds build cifar10 --file_format=array_record --data_dir=DIR`; copy DIR where it is read. A run
does it itself (`prepare`) for CIFAR-10 where TensorFlow and a network exist.
`missing_data_message` is the cheap pre-flight check that says what is missing and how to fix it.
"""

from __future__ import annotations

import concurrent.futures
import copy
import dataclasses
import importlib.util
import os
from typing import Iterator

import jax
import numpy as np
import PIL.Image
import tensorflow_datasets as tfds

RESAMPLE = PIL.Image.Resampling.LANCZOS
# Above this many examples, jax.random.choice(replace=False) (a full permutation) is too slow
# per batch (measured: docs/performance.md); batch() then rejects repeated draws instead.
PERMUTATION_LIMIT = 1 << 20
CHANNELS = 3  # every image comes out RGB (grayscale repeated, alpha dropped)


@dataclasses.dataclass(frozen=True)
class DatasetSpec:
  """How one dataset is read.

  Attributes:
    tfds_name: the tfds builder, "name/config".
    image_size: default output resolution (square).
    center_crop: crop the largest centred square before resizing.
    reference_split: the split reference statistics (FID/KID) are computed on by default.
    notes: what preparing it needs beyond `tfds build`, for missing_data_message.
    prepared_by_run: a run prepares it itself (prepare) where TensorFlow and a network exist;
      the others need manual downloads or accounts.
  """
  tfds_name: str
  image_size: int
  center_crop: bool
  reference_split: str = "train"
  notes: str = ""
  prepared_by_run: bool = False


_LSUN_NOTES = ("tfds's lsun builder downloads the LMDB zip from dl.yf.io (hard-coded URLs) and "
               "reads it with tensorflow-io, so install tensorflow-io as well; the train zips are "
               "large (church_outdoor about 2.3 GB, bedroom about 43 GB).")
DATASETS: dict[str, DatasetSpec] = {
    # The paper's CIFAR-10 FID uses the 50k training images.
    "cifar10": DatasetSpec("cifar10", 32, center_crop=False, prepared_by_run=True),
    "imagenet64": DatasetSpec(
        "downsampled_imagenet/64x64", 64, center_crop=False,
        notes="The builder downloads from image-net.org/small/, which may need an ImageNet "
              "account today; if the download fails, check the tfds catalog page."),
    "lsun_church": DatasetSpec("lsun/church_outdoor", 128, center_crop=True, notes=_LSUN_NOTES),
    "lsun_bedroom": DatasetSpec("lsun/bedroom", 128, center_crop=True, notes=_LSUN_NOTES),
}


def get_spec(name: str) -> DatasetSpec:
  """The spec of a dataset name; ValueError listing the valid names otherwise."""
  if name not in DATASETS:
    raise ValueError(f"unknown image dataset {name!r}; valid choices: {sorted(DATASETS)}")
  return DATASETS[name]


def center_crop_and_resize(image: np.ndarray, size: int, *, center_crop: bool = True
                           ) -> np.ndarray:
  """uint8 [H, W, C] -> uint8 [size, size, 3]: RGB, largest centred square, LANCZOS resize.

  Grayscale ([H, W] or C = 1) is repeated to RGB and a 4th (alpha) channel is dropped. The crop
  keeps rows (H - s) // 2 : (H + s) // 2 with s = min(H, W), and likewise columns.
  """
  if image.ndim == 2:
    image = image[..., None]
  if image.ndim != 3 or image.shape[-1] not in (1, 3, 4):
    raise ValueError(f"expected an image [H, W, 1|3|4], got shape {image.shape}")
  image = np.asarray(image, np.uint8)
  image = np.repeat(image, 3, axis=-1) if image.shape[-1] == 1 else image[..., :3]
  if center_crop:
    height, width = image.shape[:2]
    side = min(height, width)
    top, left = (height - side) // 2, (width - side) // 2
    image = image[top:top + side, left:left + side]
  if image.shape[:2] != (size, size):
    image = np.asarray(PIL.Image.fromarray(np.ascontiguousarray(image), "RGB")
                       .resize((size, size), RESAMPLE))
  return image


def sample_indices(key: jax.Array, population: int, num: int) -> np.ndarray:
  """[num] distinct indices in [0, population), uniform without replacement, fixed by `key`.

  Up to PERMUTATION_LIMIT examples (or num > population / 2) this is jax.random.choice, the same
  indices ArraySource.batch draws; above, repeated jax.random.randint draws are dropped, keeping
  first-draw order (still a uniform random subset, in O(num) time).
  """
  if not 1 <= num <= population:
    raise ValueError(f"cannot draw {num} distinct examples from {population}")
  if population <= PERMUTATION_LIMIT or 2 * num > population:
    return np.asarray(jax.random.choice(key, population, (num,), replace=False))
  chosen: dict[int, None] = {}  # insertion-ordered set
  draw = 0
  while len(chosen) < num:
    ids = jax.random.randint(jax.random.fold_in(key, draw), (2 * num,), 0, population)
    chosen.update(dict.fromkeys(np.asarray(ids).tolist()))
    draw += 1
  return np.array(list(chosen)[:num], np.int64)


def shard_bounds(num_examples: int, process_index: int, process_count: int) -> tuple[int, int]:
  """[start, stop) of a process's contiguous shard; shard sizes differ by at most one."""
  return (num_examples * process_index // process_count,
          num_examples * (process_index + 1) // process_count)


class TFDSImageSource:
  """Images of one split of a tfds dataset, read on demand (same batch contract as ArraySource).

  `batch(key, num)` draws examples from the whole split, identical on every process for the same
  key. `iterate` walks the first num_examples in stored order, each process its contiguous shard
  (shard_bounds; contiguous because ArrayRecord reads are cheapest in order); processes may yield
  one batch more or fewer, so accumulate statistics locally and combine them once at the end.
  """

  def __init__(self, name: str, split: str | None = None, *, image_size: int | None = None,
               data_dir: str | None = None, process_index: int | None = None,
               process_count: int | None = None, num_threads: int = 8):
    """Opens the split (reads no records).

    Args:
      name: a key of DATASETS.
      split: a tfds split name ("train", "test", "validation"); None: the spec's reference_split.
      image_size: output resolution; None: the spec's default.
      data_dir: the tfds data directory; None: tfds's default (TFDS_DATA_DIR or
        ~/tensorflow_datasets).
      process_index, process_count: this process's shard for `iterate`; None: jax's.
      num_threads: threads decoding and resizing a batch (PIL releases the GIL).
    """
    self.spec = get_spec(name)
    self.split = self.spec.reference_split if split is None else split
    self.name = f"{name}/{self.split}"
    self.image_size = self.spec.image_size if image_size is None else int(image_size)
    self.process_index = jax.process_index() if process_index is None else process_index
    self.process_count = jax.process_count() if process_count is None else process_count
    if self.image_size < 1:
      raise ValueError(f"image_size must be positive, got {image_size}")
    if not 0 <= self.process_index < self.process_count:
      raise ValueError(f"process_index {self.process_index} outside [0, {self.process_count})")
    self.num_threads = max(1, num_threads)
    self._positions = None  # the record indices this source reads (None: all); see carve
    try:
      self._records = tfds.data_source(self.spec.tfds_name, split=self.split,
                                       data_dir=data_dir, download=False)
    except Exception as error:  # tfds raises several types; replace them with a clear message
      message = missing_data_message(name, self.split, data_dir)
      if message is None:
        raise
      raise FileNotFoundError(message) from error

  @property
  def num_examples(self) -> int:
    return len(self._records) if self._positions is None else len(self._positions)

  @property
  def example_shape(self) -> tuple[int, int, int]:
    return (self.image_size, self.image_size, CHANNELS)

  def load(self, indices) -> np.ndarray:
    """float32 [len(indices), S, S, 3] in [-1, 1], the examples at these record indices."""
    def one(index):
      record = int(index) if self._positions is None else int(self._positions[index])
      image = self._records[record]["image"]
      return center_crop_and_resize(image, self.image_size, center_crop=self.spec.center_crop)
    indices = list(indices)
    if not indices:
      return np.zeros((0, *self.example_shape), np.float32)
    with concurrent.futures.ThreadPoolExecutor(min(self.num_threads, len(indices))) as pool:
      images = np.stack(list(pool.map(one, indices)))
    return images.astype(np.float32) / 127.5 - 1.0

  def batch(self, key: jax.Array, num: int, rows: slice = slice(None)) -> np.ndarray:
    """[num, S, S, 3] examples drawn uniformly without replacement (num <= N) by `key`; only
    the `rows` of them are read (a process's share of a global batch)."""
    if not 1 <= num <= self.num_examples:
      raise ValueError(f"batch of {num} from {self.name}, which has {self.num_examples} examples")
    return self.load(sample_indices(key, self.num_examples, num)[rows])

  def carve(self, num: int, key: jax.Array) -> tuple["TFDSImageSource", np.ndarray]:
    """(the rest, the `num` held-out examples [num, S, S, 3]): a validation split carved from
    the examples by `key` (sample_indices), read once; the rest's batch and iterate never see
    them."""
    if not 1 <= num < self.num_examples:
      raise ValueError(f"a split of {num} from {self.name}, which has {self.num_examples} "
                       "examples (at least one must stay)")
    held = np.sort(sample_indices(key, self.num_examples, num))
    rest = copy.copy(self)
    positions = np.arange(self.num_examples) if self._positions is None else self._positions
    rest._positions = np.delete(positions, held)  # pylint: disable=protected-access
    return rest, self.load(held)

  def iterate(self, batch_size: int, *, num_examples: int | None = None
              ) -> Iterator[np.ndarray]:
    """This process's shard of the first num_examples (None: all), in order, as float32
    [<= batch_size, S, S, 3] batches; only the last batch may be short."""
    total = self.num_examples if num_examples is None else num_examples
    if not 0 <= total <= self.num_examples:
      raise ValueError(f"num_examples={num_examples}, but {self.name} has {self.num_examples}")
    if batch_size < 1:
      raise ValueError(f"batch_size must be positive, got {batch_size}")
    start, stop = shard_bounds(total, self.process_index, self.process_count)
    for first in range(start, stop, batch_size):
      yield self.load(range(first, min(first + batch_size, stop)))


def prepare(name: str, data_dir: str | None = None) -> None:
  """Downloads and prepares dataset `name` in the ArrayRecord format under data_dir (tfds's
  default folder when None). tfds's builders read the downloads with TensorFlow, so this needs it
  (ImportError otherwise) and network access."""
  spec = get_spec(name)
  if importlib.util.find_spec("tensorflow") is None:
    raise ImportError("tfds builds datasets with TensorFlow, which is not installed (pip install "
                      "tensorflow-cpu)")
  builder = tfds.builder(spec.tfds_name, data_dir=data_dir,
                         file_format=tfds.core.FileFormat.ARRAY_RECORD)
  builder.download_and_prepare()


def missing_data_message(name: str, split: str | None = None, data_dir: str | None = None
                         ) -> str | None:
  """None if `name`'s split is prepared for tfds.data_source under data_dir, else what to do.

  Reads only dataset_info.json and lists the split's files (no records, no TensorFlow).
  """
  spec = get_spec(name)
  split = spec.reference_split if split is None else split
  root = data_dir if data_dir is not None else tfds.core.constants.DATA_DIR
  builder = tfds.builder(spec.tfds_name, data_dir=data_dir)
  where = os.fspath(builder.data_dir)
  build = (f"on a machine with TensorFlow and network access (`pip install tensorflow "
           f"tensorflow-datasets`) run `tfds build {spec.tfds_name} --file_format=array_record "
           f"--data_dir={root}` (if that machine is another one, copy the directory here)")
  build += f". {spec.notes}" if spec.notes else "."
  head = f"dataset {name!r} (tfds {spec.tfds_name!r}, split {split!r})"
  if not builder.is_prepared():
    return f"{head} is not prepared: no dataset_info.json in {where}. To fix it, {build}"
  info = builder.info
  formats = info.available_file_formats() & tfds.core.FileFormat.with_random_access()
  if not formats:
    stored = getattr(info.file_format, "value", info.file_format)
    return (f"{head} is prepared in {where} as {stored}, which tfds.data_source "
            f"cannot read. Convert it: `tfds convert_format --dataset_version_dir={where} "
            f"--out_file_format=array_record`, or rebuild: {build}")
  if split not in info.splits:
    return f"{head}: no such split in {where}; prepared splits: {sorted(info.splits)}"
  found = [p for fmt in formats for p in
           info.splits[split].get_available_shards(builder.data_path, file_format=fmt)]
  if not found:
    return (f"{head}: dataset_info.json is in {where} but the split's files are not. "
            f"To fix it, {build}")
  return None
