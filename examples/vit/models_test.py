"""Patches and the ViT's output."""

import jax.numpy as jnp
import numpy as np
from flax import nnx

from examples.vit import models


def test_patchify_cuts_row_major_patches():
  images = jnp.arange(2 * 4 * 4 * 3).reshape(2, 4, 4, 3)
  patches = models.patchify(images, 2)
  assert patches.shape == (2, 4, 2 * 2 * 3)
  # Patch 1 of image 0 is rows 0-1, columns 2-3.
  np.testing.assert_array_equal(patches[0, 1], images[0, 0:2, 2:4].reshape(-1))
  np.testing.assert_array_equal(patches[1, 2], images[1, 2:4, 0:2].reshape(-1))


def test_vit_starts_from_the_uniform_prediction():
  model = nnx.jit(lambda: models.ViT((8, 8, 1), 2, 10, 16, 1, 2, rngs=nnx.Rngs(0)))()
  logits = nnx.jit(lambda m, x: m(x))(model, jnp.ones((3, 8, 8, 1)))
  assert logits.shape == (3, 10)
  np.testing.assert_array_equal(logits, 0.0)  # zero head: loss ln(10) at step 0
