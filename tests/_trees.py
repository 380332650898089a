"""The tests' one comparison of two pytrees: their structure and every leaf.

Zipping ``jax.tree.leaves(a)`` with ``jax.tree.leaves(b)`` passes when the trees differ in
structure (a renamed key, a list for a tuple) and when one tree is shorter (``zip`` stops at
the shorter), so a test could pass on the wrong tree. Here the key paths and the tree
definitions must match before any leaf is compared, and a failure names the first key path
that differs.
"""
import jax
import numpy as np


def _is_key(x) -> bool:
  dtype = getattr(x, 'dtype', None)
  return dtype is not None and jax.dtypes.issubdtype(dtype, jax.dtypes.prng_key)


def _first_index(mask: np.ndarray, shape: tuple) -> tuple:
  return tuple(int(i) for i in np.unravel_index(int(np.argmax(mask)), shape)) if shape else ()


def _leaf_difference(x, y, exact: bool, rtol: float, atol: float) -> str | None:
  # Typed PRNG keys have no NumPy dtype: the key type must match, then the key data.
  if _is_key(x) or _is_key(y):
    if not (_is_key(x) and _is_key(y)) or str(x.dtype) != str(y.dtype):
      return f'dtype {getattr(x, "dtype", type(x))} != {getattr(y, "dtype", type(y))}'
    x, y = jax.random.key_data(x), jax.random.key_data(y)
  x, y = np.asarray(x), np.asarray(y)
  if x.shape != y.shape:
    return f'shape {x.shape} != {y.shape}'
  if x.dtype != y.dtype:
    return f'dtype {x.dtype} != {y.dtype}'
  if x.size == 0:
    return None
  if exact or not np.issubdtype(x.dtype, np.inexact):
    # Bits, not ==: -0.0 vs 0.0 is a difference and a NaN in the same place with the same bits
    # is not, as for a checkpoint restored bit for bit.
    width = x.dtype.itemsize
    bx = np.ascontiguousarray(x).reshape(-1).view(np.uint8).reshape(x.size, width)
    by = np.ascontiguousarray(y).reshape(-1).view(np.uint8).reshape(y.size, width)
    bad = (bx != by).any(axis=1).reshape(x.shape)
    what = 'bits differ'
  else:
    bad = ~np.isclose(x, y, rtol=rtol, atol=atol, equal_nan=True)
    what = f'not close (rtol={rtol}, atol={atol})'
  if not bad.any():
    return None
  i = _first_index(bad, x.shape)
  return (f'{what} at {int(bad.sum())} of {x.size} elements; first at index {i}: '
          f'{x[i].item()!r} vs {y[i].item()!r}')


def tree_difference(a, b, *, exact: bool = True, rtol: float = 0.0,
                    atol: float = 0.0) -> str | None:
  """The first difference between two pytrees, or None when they are equal.

  Args:
    a: a pytree (the value under test).
    b: a pytree (the expected value).
    exact: leaves must be equal bit for bit; otherwise floating leaves must be
      ``np.isclose(rtol, atol)`` (NaN equal to NaN) and other leaves equal.
    rtol: relative tolerance (only with ``exact=False``).
    atol: absolute tolerance (only with ``exact=False``).

  Returns:
    A one-line description naming the first differing key path, or None.

  Raises:
    ValueError: a tolerance is given with ``exact=True`` (it would be ignored silently).
  """
  if exact and (rtol or atol):
    raise ValueError('rtol/atol need exact=False')
  flat_a, def_a = jax.tree_util.tree_flatten_with_path(a)
  flat_b, def_b = jax.tree_util.tree_flatten_with_path(b)
  keys_a = [jax.tree_util.keystr(p) for p, _ in flat_a]
  keys_b = [jax.tree_util.keystr(p) for p, _ in flat_b]
  if keys_a != keys_b:
    # The first position where the flattened key paths part (one list may simply end).
    i = next((i for i, (ka, kb) in enumerate(zip(keys_a, keys_b)) if ka != kb),
             min(len(keys_a), len(keys_b)))
    here_a = keys_a[i] if i < len(keys_a) else '(nothing)'
    here_b = keys_b[i] if i < len(keys_b) else '(nothing)'
    set_a, set_b = set(keys_a), set(keys_b)
    only_a = [k for k in keys_a if k not in set_b]
    only_b = [k for k in keys_b if k not in set_a]
    return (f'{here_a or "<root>"} vs {here_b or "<root>"}: key paths differ '
            f'({len(keys_a)} vs {len(keys_b)} leaves; only in the first: {only_a[:5]}, '
            f'only in the second: {only_b[:5]})')
  if def_a != def_b:
    # Same key paths, other node types (a list for a tuple, a dict for a dataclass).
    return f'tree structures differ at the same key paths: {def_a} vs {def_b}'
  for key, (_, x), (_, y) in zip(keys_a, flat_a, flat_b):
    diff = _leaf_difference(x, y, exact, rtol, atol)
    if diff is not None:
      return f'{key or "<root>"}: {diff}'
  return None


def trees_equal(a, b, **kwargs) -> bool:
  """``tree_difference(a, b, **kwargs) is None``: for checks that a tree *differs*."""
  return tree_difference(a, b, **kwargs) is None


def assert_trees_equal(a, b, *, exact: bool = True, rtol: float = 0.0, atol: float = 0.0,
                       where: str = ''):
  """Fails with the first differing key path unless ``a`` and ``b`` are equal pytrees.

  Args:
    a: a pytree (the value under test).
    b: a pytree (the expected value).
    exact: see ``tree_difference``.
    rtol: see ``tree_difference``.
    atol: see ``tree_difference``.
    where: what is compared, put before the message (e.g. the loop's case).

  Raises:
    AssertionError: the trees differ in structure or in a leaf's shape, dtype or values.
  """
  diff = tree_difference(a, b, exact=exact, rtol=rtol, atol=atol)
  if diff is not None:
    raise AssertionError(f'{where}: {diff}' if where else diff)
