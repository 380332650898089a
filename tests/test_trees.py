"""The tests' pytree comparison (tests/_trees.py) fails where zipping the leaves passes."""
import os
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import _trees  # pylint: disable=g-import-not-at-top,wrong-import-position


def _zip_leaves_equal(a, b) -> bool:
  """The comparison the helper replaces: it sees neither keys nor a shorter tree."""
  return all(np.array_equal(x, y) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))


X, Y = jnp.arange(3.0), jnp.arange(3.0) + 10


@pytest.mark.parametrize('a,b,path', [
    # A renamed key: both flatten to [X, Y] in sorted-key order.
    ({'kernel': X, 'scale': Y}, {'bias': X, 'kernel': Y}, "['kernel']"),
    # One tree has an extra leaf: zip stops at the shorter one.
    ({'w': X}, {'w': X, 'z': Y}, "['z']"),
    ([X], [X, Y], '[1]'),
    # Nested one level deeper under the same outer key.
    ({'enc': {'w': X}}, {'enc': {'stage': {'w': X}}}, "['enc']['w']"),
])
def test_a_structure_difference_a_leaf_zip_misses_fails_naming_the_key_path(a, b, path):
  assert _zip_leaves_equal(a, b)   # the old check passes ...
  with pytest.raises(AssertionError, match=r'key paths differ') as e:
    _trees.assert_trees_equal(a, b, where='case')
  msg = str(e.value)
  assert msg.startswith('case: ') and path in msg and '\n' not in msg, msg


def test_same_key_paths_other_node_types_fail():
  # A tuple and a list have the same key paths ([0], [1]) and leaves.
  assert _zip_leaves_equal((X, Y), [X, Y])
  with pytest.raises(AssertionError, match='tree structures differ'):
    _trees.assert_trees_equal((X, Y), [X, Y])


def test_a_value_shape_or_dtype_difference_fails_naming_the_leaf():
  a = {'enc': {'w': X, 'b': Y}, 'head': jnp.zeros((2, 2))}
  _trees.assert_trees_equal(a, jax.tree.map(jnp.copy, a))   # equal trees pass
  cases = [({**a, 'head': a['head'].at[1, 0].set(1e-30)}, "['head']: bits differ",
            'index (1, 0)'),
           ({**a, 'enc': {'w': X, 'b': Y[:2]}}, "['enc']['b']: shape (3,) != (2,)", ''),
           ({**a, 'head': a['head'].astype(jnp.bfloat16)}, "['head']: dtype float32 != bfloat16",
            '')]
  for changed, want, index in cases:
    with pytest.raises(AssertionError) as e:
      _trees.assert_trees_equal(a, changed)
    assert want in str(e.value) and index in str(e.value), str(e.value)
    assert not _trees.trees_equal(a, changed)


def test_exact_is_bitwise_and_tolerances_need_exact_false():
  nan = jnp.array([jnp.nan, 1.0])
  _trees.assert_trees_equal({'x': nan}, {'x': jnp.array([jnp.nan, 1.0])})  # same NaN bits
  assert not _trees.trees_equal(jnp.array([0.0]), jnp.array([-0.0]))
  assert _trees.trees_equal(jnp.array([0.0]), jnp.array([-0.0]), exact=False)
  near = X * (1 + 1e-6)
  assert not _trees.trees_equal(X, near)
  _trees.assert_trees_equal(X, near, exact=False, rtol=1e-5)
  with pytest.raises(AssertionError, match=r'\[1\]: not close .* first at index \(2,\)'):
    _trees.assert_trees_equal([X, X], [X, X.at[2].add(1e-3)], exact=False, rtol=1e-5)
  # Integers are compared exactly even with tolerances.
  assert not _trees.trees_equal(jnp.array([3]), jnp.array([4]), exact=False, atol=10)
  with pytest.raises(ValueError, match='exact=False'):
    _trees.tree_difference(X, X, rtol=1e-5)


def test_prng_keys_compare_by_key_data():
  k = jax.random.key(0)
  _trees.assert_trees_equal({'rng': k}, {'rng': jax.random.key(0)})
  assert not _trees.trees_equal({'rng': k}, {'rng': jax.random.key(1)})
  assert not _trees.trees_equal({'rng': k}, {'rng': jax.random.key_data(k)})
