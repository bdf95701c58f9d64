"""balanced_adam and balanced_adamw against optax.adam / optax.adamw with b1 = b2."""

import inspect
from unittest import mock

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from absl.testing import parameterized

import balanced_optax as bo
from tests import streams

STEPS = 100
BETAS = (0.0, 0.5, 0.9, 0.95, 0.999)
EPSILONS = (1e-8, 1e-12)


def _schedule(peak):
  return optax.warmup_cosine_decay_schedule(0.0, peak, 10, STEPS, peak / 10)


def _cases():
  for beta in BETAS:
    for eps in EPSILONS:
      for scale_name, scale in (("unit", 1.0), ("eps", eps)):
        yield f"beta{beta}_eps{eps:g}_{scale_name}", beta, eps, scale


class BalancedAdamTest(chex.TestCase):
  @chex.variants(with_jit=True)
  def test_equals_optax_adam_with_tied_betas(self):
    self._assert_equals_optax_adam_with_tied_betas(beta=0.9, eps=1e-8, scale=1.0)

  @chex.variants(with_jit=True, without_jit=True)
  @parameterized.named_parameters(*_cases())
  @pytest.mark.slow
  def test_equals_optax_adam_with_tied_betas_in_every_case(self, beta, eps, scale):
    self._assert_equals_optax_adam_with_tied_betas(beta, eps, scale)

  def _assert_equals_optax_adam_with_tied_betas(self, beta, eps, scale):
    params = streams.nested_params()
    grads = streams.gradient_stream(params, STEPS, scale=scale, seed=1)
    lr = _schedule(1e-2)
    ours = bo.balanced_adam(lr, beta=beta, eps=eps)
    got, got_state = streams.run(
      self.variant(ours.update), ours.init(params), grads, params
    )
    want, want_state = streams.reference(
      optax.adam(lr, b1=beta, b2=beta, eps=eps), grads, params
    )
    chex.assert_trees_all_close(got, want, rtol=2e-5, atol=1e-9)
    # Same state, same meaning: count, mu and nu agree too.
    chex.assert_trees_all_equal_structs(got_state, want_state)
    streams.assert_leafwise_close(got_state, want_state, rtol=1e-6)
    # Non-trivial: the updates are not all zero and vary across steps.
    self.assertGreater(np.abs(jax.tree.leaves(got)[0]).max(), 1e-4)

  @chex.variants(with_jit=True, without_jit=True)
  def test_differs_from_untied_adam(self):
    # Guards against the comparison above passing vacuously.
    params = streams.nested_params()
    grads = streams.gradient_stream(params, 20, seed=2)
    ours = bo.balanced_adam(1e-2, beta=0.9)
    got, _ = streams.run(self.variant(ours.update), ours.init(params), grads, params)
    untied, _ = streams.reference(optax.adam(1e-2, b1=0.9, b2=0.999), grads, params)
    diff = max(
      jax.tree.leaves(jax.tree.map(lambda a, b: np.abs(a - b).max(), got, untied))
    )
    self.assertGreater(diff, 1e-4)  # 1% of the learning rate.


class BalancedAdamWTest(chex.TestCase):
  @chex.variants(with_jit=True)
  def test_equals_optax_adamw(self):
    self._assert_equals_optax_adamw(mask_kind="tree")

  @chex.variants(with_jit=True, without_jit=True)
  @parameterized.named_parameters(
    ("tree_mask", "tree"), ("callable_mask", "callable"), ("no_mask", None)
  )
  @pytest.mark.slow
  def test_equals_optax_adamw_in_every_case(self, mask_kind):
    self._assert_equals_optax_adamw(mask_kind)

  def _assert_equals_optax_adamw(self, mask_kind):
    params = jax.tree.map(lambda x: x + 0.5, streams.nested_params())
    grads = streams.gradient_stream(params, STEPS, seed=3)
    decay_matrices = lambda p: jax.tree.map(lambda x: x.ndim >= 2, p)
    mask = {"tree": decay_matrices(params), "callable": decay_matrices, None: None}
    kwargs = dict(eps=1e-8, weight_decay=0.1, mask=mask[mask_kind])
    ours = bo.balanced_adamw(1e-2, beta=0.95, **kwargs)
    state, updates = ours.init(params), []
    update = self.variant(ours.update)
    p = params
    # Weight decay reads the params, so here the trajectory is coupled.
    for g in grads:
      u, state = update(g, state, p)
      p = optax.apply_updates(p, u)
      updates.append(u)
    ref = optax.adamw(1e-2, b1=0.95, b2=0.95, **kwargs)
    ref_state, ref_p = ref.init(params), params
    ref_update = jax.jit(ref.update)
    for g in grads:
      u, ref_state = ref_update(g, ref_state, ref_p)
      ref_p = optax.apply_updates(ref_p, u)
    chex.assert_trees_all_close(p, ref_p, rtol=1e-5, atol=1e-6)
    # The decay really acted where the mask says (and not elsewhere).
    no_decay = bo.balanced_adam(1e-2, beta=0.95)
    q, s = params, no_decay.init(params)
    for g in grads:
      u, s = jax.jit(no_decay.update)(g, s, q)
      q = optax.apply_updates(q, u)
    decayed = jax.tree.map(lambda a, b: bool(np.abs(a - b).max() > 1e-3), p, q)
    if mask_kind is None:
      self.assertTrue(all(jax.tree.leaves(decayed)))
    else:
      self.assertEqual(decayed, decay_matrices(params))


class NesterovEpsRootTest(chex.TestCase):
  """The options port from optax.adam / optax.adamw by renaming b1 = b2 to beta."""

  @chex.variants(with_jit=True)
  def test_balanced_adam_equals_optax_adam(self):
    self._assert_balanced_adam_equals_optax_adam(nesterov=True, eps_root=1e-3)

  @chex.variants(with_jit=True, without_jit=True)
  @parameterized.product(nesterov=(False, True), eps_root=(0.0, 1e-8, 1e-3))
  @pytest.mark.slow
  def test_balanced_adam_equals_optax_adam_in_every_case(self, nesterov, eps_root):
    self._assert_balanced_adam_equals_optax_adam(nesterov, eps_root)

  def _assert_balanced_adam_equals_optax_adam(self, nesterov, eps_root):
    params = streams.nested_params()
    grads = streams.gradient_stream(params, 60, seed=4)
    lr = _schedule(1e-2)
    ours = bo.balanced_adam(lr, 0.9, 1e-8, eps_root=eps_root, nesterov=nesterov)
    got, got_state = streams.run(
      self.variant(ours.update), ours.init(params), grads, params
    )
    ref = optax.adam(lr, b1=0.9, b2=0.9, eps=1e-8, eps_root=eps_root, nesterov=nesterov)
    want, want_state = streams.reference(ref, grads, params)
    streams.assert_leafwise_close(got, want, rtol=1e-5)
    streams.assert_leafwise_close(got_state, want_state, rtol=1e-6)

  @chex.variants(with_jit=True)
  def test_balanced_adamw_equals_optax_adamw(self):
    self._assert_balanced_adamw_equals_optax_adamw(nesterov=True, eps_root=1e-3)

  @chex.variants(with_jit=True, without_jit=True)
  @parameterized.product(nesterov=(False, True), eps_root=(0.0, 1e-3))
  @pytest.mark.slow
  def test_balanced_adamw_equals_optax_adamw_in_every_case(self, nesterov, eps_root):
    self._assert_balanced_adamw_equals_optax_adamw(nesterov, eps_root)

  def _assert_balanced_adamw_equals_optax_adamw(self, nesterov, eps_root):
    params = jax.tree.map(lambda x: x + 0.5, streams.nested_params())
    grads = streams.gradient_stream(params, 60, seed=5)
    kwargs = dict(eps=1e-8, eps_root=eps_root, weight_decay=0.1, nesterov=nesterov)
    ours = bo.balanced_adamw(1e-2, beta=0.9, **kwargs)
    ref = optax.adamw(1e-2, b1=0.9, b2=0.9, **kwargs)
    trajectories = []
    for tx, update in ((ours, self.variant(ours.update)), (ref, jax.jit(ref.update))):
      p, state = params, tx.init(params)
      for g in grads:
        u, state = update(g, state, p)
        p = optax.apply_updates(p, u)
      trajectories.append(p)
    chex.assert_trees_all_close(*trajectories, rtol=1e-5, atol=1e-6)

  @parameterized.parameters(False, True)
  def test_inject_hyperparams_with_nesterov_and_eps_root(self, nesterov):
    params = streams.nested_params()
    grads = streams.gradient_stream(params, 40, seed=6)
    ours = optax.inject_hyperparams(bo.balanced_adam)(
      learning_rate=1e-2, beta=0.9, eps_root=1e-4, nesterov=nesterov
    )
    ref = optax.inject_hyperparams(optax.adam)(
      learning_rate=1e-2, b1=0.9, b2=0.9, eps_root=1e-4, nesterov=nesterov
    )
    got_state, want_state = ours.init(params), ref.init(params)
    self.assertIn("eps_root", got_state.hyperparams)
    self.assertNotIn("nesterov", got_state.hyperparams)  # A bool stays static.
    for i, g in enumerate(grads):
      if i == 20:  # Changed mid-training, as the state allows.
        got_state.hyperparams["eps_root"] = jnp.asarray(1e-2)
        want_state.hyperparams["eps_root"] = jnp.asarray(1e-2)
      u, got_state = jax.jit(ours.update)(g, got_state, params)
      v, want_state = jax.jit(ref.update)(g, want_state, params)
      streams.assert_leafwise_close(u, v, rtol=1e-5)

  def test_eps_root_and_nesterov_change_the_updates(self):
    # Guards against the comparisons above passing vacuously.
    params = streams.nested_params()
    grads = streams.gradient_stream(params, 10, seed=7)
    plain, _ = streams.reference(bo.balanced_adam(1e-2, 0.9), grads, params)
    for kwargs in (dict(nesterov=True), dict(eps_root=1e-1)):
      other, _ = streams.reference(bo.balanced_adam(1e-2, 0.9, **kwargs), grads, params)
      self.assertGreater(np.abs(other["w"] - plain["w"]).max(), 1e-4)


class ForwardingTest(parameterized.TestCase):
  """The aliases pass every option of scale_by_balanced_adam on, unchanged."""

  @parameterized.parameters(bo.balanced_adam, bo.balanced_adamw)
  def test_every_fused_option_reaches_the_fused_transform(self, alias):
    fused = inspect.signature(bo.scale_by_balanced_adam).parameters
    options = inspect.signature(alias).parameters
    # Same names and defaults, so that a call ports between them.
    for name, parameter in fused.items():
      self.assertEqual(options[name].default, parameter.default, name)
    # Values unlike every default, to see each one arrive.
    values = dict(
      beta=0.5,
      eps=1e-3,
      eps_root=1e-4,
      nesterov=True,
      state_dtype="bfloat16",
      scale_safe=True,
      guard_nonfinite=False,
      stochastic_rounding=False,
      min_size=64,
      full_precision_mask={"w": True},
    )
    self.assertEqual(set(values), set(fused))
    calls = []

    # Only the forwarding is under test: these values together are no valid
    # transform (the low-bit options with a float state_dtype).
    def spy(*args, **kwargs):
      calls.append(kwargs)
      return optax.identity()

    with mock.patch.object(bo.alias, "scale_by_balanced_adam", spy):
      alias(1e-3, **values)
    self.assertEqual(calls, [values])


if __name__ == "__main__":
  import absl.testing.absltest

  absl.testing.absltest.main()
