"""Data parallelism over every device of every process, with jit and shardings.

One 1-D mesh over jax.devices() with the axis "data". Batches (generated and real) are sharded
along their first axis; sampler parameters, optimizer state and the frozen networks' weights are
replicated. The computation stays the global one: the KID loss is a statistic of the whole global
batch, and XLA inserts the collectives (the all-gather of features for the kernel matrices, the
all-reduce of the gradients), so a step on D devices equals the step on one device for the same
global batch, up to float reduction order.
"""

from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental import multihost_utils
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from ddss_jax.util.errors import ConfigError

AXIS = "data"


def make_mesh(devices=None) -> Mesh:
  """A 1-D mesh over `devices` (default: all devices of all processes).

  Built with Mesh directly: jax.make_mesh's default explicit axis types reject reshapes of
  batch-sharded arrays inside the eps-model.
  """
  return Mesh(np.asarray(jax.devices() if devices is None else devices), (AXIS,))


def batch_sharding(mesh: Mesh) -> NamedSharding:
  """Arrays [B, ...] split along B over the mesh."""
  return NamedSharding(mesh, PartitionSpec(AXIS))


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, PartitionSpec())


def constrain_batch(x: jax.Array, mesh: Mesh | None) -> jax.Array:
  """x [B, ...] constrained to batch_sharding inside a jitted function (identity without mesh)."""
  if mesh is None or mesh.size == 1:
    return x
  return jax.lax.with_sharding_constraint(x, batch_sharding(mesh))


def check_batch(batch_size: int, mesh: Mesh, name: str) -> None:
  """ConfigError (a ValueError) unless `batch_size` splits evenly over the mesh's devices."""
  if batch_size % mesh.size:
    raise ConfigError(name, batch_size, f"must be a multiple of the number of devices "
                      f"({mesh.size}: {jax.process_count()} process(es) x "
                      f"{jax.local_device_count()} local device(s))")


def process_rows(batch_size: int) -> slice:
  """The rows of a global batch this process holds (its devices' contiguous block)."""
  per_process = batch_size // jax.process_count()
  start = jax.process_index() * per_process
  return slice(start, start + per_process)


def shard_batch(local: np.ndarray, mesh: Mesh, batch_size: int) -> jax.Array:
  """The global [batch_size, ...] array from this process's rows `local` [batch_size / P, ...]."""
  return jax.make_array_from_process_local_data(batch_sharding(mesh), np.asarray(local),
                                                (batch_size,) + tuple(local.shape[1:]))


def padded_apply(fn: Callable[[jax.Array], Any], batch: np.ndarray, size: int,
                 mesh: Mesh | None = None) -> Any:
  """fn over batch [B, ...] in chunks of exactly `size` (the last zero-padded): one compilation
  whatever B is; the outputs are concatenated and cut back to B (NumPy, on every process).

  With a mesh (and `size` a multiple of its device count), each chunk is split over the mesh's
  devices, so fn runs on all of them; every process passes the same batch.
  """
  split = mesh is not None and mesh.size > 1 and size % mesh.size == 0
  outs = []
  for start in range(0, len(batch), size):
    chunk = batch[start:start + size]
    num = len(chunk)
    if num < size:
      chunk = np.concatenate([chunk, np.zeros((size - num,) + chunk.shape[1:], chunk.dtype)])
    if split:
      chunk = jax.make_array_from_callback(chunk.shape, batch_sharding(mesh),
                                           lambda index, c=chunk: c[index])
    out = fn(jnp.asarray(chunk) if not split else chunk)
    if split and not all(a.is_fully_addressable for a in jax.tree.leaves(out)):
      out = multihost_utils.process_allgather(out, tiled=True)
    outs.append(jax.tree.map(lambda a, n=num: np.asarray(a)[:n], out))
  return jax.tree.map(lambda *parts: np.concatenate(parts), *outs)
