"""Convolutions in the one layout XLA:CPU runs fast, also inside compiled loops.

XLA:CPU runs a convolution on its fast (Eigen) path only when the operands are in canonical
order: input [batch, spatial..., feature], kernel [spatial..., in, out], output like the input.
JAX's gradient of a convolution with respect to its input is a convolution whose kernel is
labelled [spatial..., out, in] (the forward kernel, reversed, with the feature dimensions swapped
by the labels alone). In straight-line code XLA transposes such a kernel itself; inside a while
loop (`lax.scan`, as in the sampler's reverse pass) it does not, and falls back to a generic,
much slower loop nest (measured: docs/performance.md, "Where the code's choices come from").

`canonical_convolutions(fn)` returns `fn` with every convolution rewritten to the canonical
order by explicit transposes of its operands (and of its result, where needed). The transposes
are exact, so the function computes the same values; XLA keeps them (a kernel transpose costs
one pass over the kernel, nothing next to the convolution), and the convolution takes the fast
path wherever it runs. The rewrite walks the function's jaxpr: convolutions at top level and
inside `jax.jit`-ed sub-functions (inlined) are rewritten; those inside other higher-order
primitives (scan, cond, remat, custom derivatives) are left as they are.
"""

from __future__ import annotations

import functools
from typing import Any, Callable, Sequence

import jax
from jax import lax
from jax.extend import core as jex

_JIT_PRIMITIVES = ("jit", "pjit")


def backend_default() -> bool:
  """Whether samplers rewrite convolutions by default: on the CPU backend, the one whose loops
  need it; other backends choose their own layouts."""
  return jax.default_backend() == "cpu"


def canonical_convolutions(fn: Callable) -> Callable:
  """fn (positional pytree arguments -> pytree) with canonically ordered convolutions."""
  @functools.wraps(fn)
  def wrapped(*args):
    closed, out_shape = jax.make_jaxpr(fn, return_shape=True)(*args)
    flat_out = _eval(closed.jaxpr, closed.consts, jax.tree.leaves(args))
    return jax.tree.unflatten(jax.tree.structure(out_shape), flat_out)

  return wrapped


def convolution_labels(text: str) -> list[str]:
  """The `dim_labels` of each convolution instruction in compiled HLO text (for tests and
  benchmarks): "b01f_01io->b01f" is the canonical order."""
  return [line.split("dim_labels=")[1].split(",")[0].split(" ")[0]
          for line in text.split("\n") if " convolution(" in line and "dim_labels=" in line]


def conv_dimension_labels(text: str) -> list[str]:
  """The distinct `convolution_labels` of compiled HLO text, sorted."""
  return sorted(set(convolution_labels(text)))


def has_canonical_kernel(label: str) -> bool:
  """Whether a convolution's `dim_labels` put its kernel in [spatial..., in, out] order."""
  return label.split("_")[1].split("->")[0].endswith("io")


def _eval(jaxpr: jex.Jaxpr, consts: Sequence[Any], args: Sequence[Any]) -> list[Any]:
  """Evaluates a jaxpr, binding each equation again, with convolutions made canonical."""
  env: dict[Any, Any] = {}

  def read(var):
    return var.val if isinstance(var, jex.Literal) else env[var]

  env.update(zip(jaxpr.constvars, consts))
  env.update(zip(jaxpr.invars, args))
  for eqn in jaxpr.eqns:
    invals = [read(v) for v in eqn.invars]
    # The equation's module path (e.g. "UNet2DModel/mid_block/attentions_0") is kept, so that
    # profiles and HLO dumps of the rewritten function still name where each operation is from.
    with jax.named_scope(str(getattr(eqn.source_info, "name_stack", "")) or "rewritten"):
      if eqn.primitive is lax.conv_general_dilated_p:
        outvals = [_canonical_conv(*invals, **eqn.params)]
      elif eqn.primitive.name in _JIT_PRIMITIVES:
        inner = eqn.params["jaxpr"]
        outvals = _eval(inner.jaxpr, inner.consts, invals)
      else:
        with eqn.ctx.manager:  # the equation's context (e.g. its config) as recorded
          outvals = eqn.primitive.bind(*invals, **eqn.primitive.get_bind_params(eqn.params))
        if not eqn.primitive.multiple_results:
          outvals = [outvals]
    for var, val in zip(eqn.outvars, outvals):
      if not isinstance(var, jex.DropVar):
        env[var] = val
  return [read(v) for v in jaxpr.outvars]


def _canonical_conv(lhs: jax.Array, rhs: jax.Array, *, dimension_numbers, **params) -> jax.Array:
  """One convolution with input [N, spatial..., C], kernel [spatial..., I, O], output like input.

  The ConvDimensionNumbers specs list dimension indices: lhs (batch, feature, spatial...), rhs
  (out feature, in feature, spatial...), out (batch, feature, spatial...).
  """
  lhs_spec, rhs_spec, out_spec = dimension_numbers
  lhs_order = (lhs_spec[0], *lhs_spec[2:], lhs_spec[1])
  rhs_order = (*rhs_spec[2:], rhs_spec[1], rhs_spec[0])
  out_order = (out_spec[0], *out_spec[2:], out_spec[1])
  num = len(lhs_spec)
  spatial = tuple(range(1, num - 1))
  canonical = lax.ConvDimensionNumbers(
      lhs_spec=(0, num - 1, *spatial), rhs_spec=(num - 1, num - 2, *range(num - 2)),
      out_spec=(0, num - 1, *spatial))
  out = lax.conv_general_dilated_p.bind(
      _transpose(lhs, lhs_order), _transpose(rhs, rhs_order), dimension_numbers=canonical,
      **params)
  inverse = tuple(sorted(range(num), key=lambda d: out_order[d]))
  return _transpose(out, inverse)


def _transpose(x: jax.Array, order: Sequence[int]) -> jax.Array:
  order = tuple(int(d) for d in order)
  return x if order == tuple(range(len(order))) else lax.transpose(x, order)
