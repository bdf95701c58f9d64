"""A Vision Transformer classifier (Flax NNX).

Shapes in names: B batch, H x W x C image, P patch side, N = (H/P)(W/P)
patches, D model width, K classes.
"""

import jax
from flax import nnx

from examples.common.transformer import Transformer, position_embedding


def patchify(images_BxHxWxC: jax.Array, patch_size: int) -> jax.Array:
  """Cuts images into non-overlapping P x P patches: B x N x (P P C)."""
  B, H, W, C = images_BxHxWxC.shape
  P = patch_size
  if H % P or W % P:
    raise ValueError(f"image {H}x{W} does not tile into {P}x{P} patches")
  x_BxHpxPxWpxPxC = images_BxHxWxC.reshape(B, H // P, P, W // P, P, C)
  x_BxHpxWpxPxPxC = x_BxHpxPxWpxPxC.transpose(0, 1, 3, 2, 4, 5)
  return x_BxHpxWpxPxPxC.reshape(B, (H // P) * (W // P), P * P * C)


class ViT(nnx.Module):
  """Linear patch embedding + positions, bidirectional blocks, mean-pool head.

  Args:
    image_shape: (H, W, C).
    patch_size: P; H and W must divide by it.
    num_classes: K.
    d_model: D.
    num_layers: transformer blocks.
    num_heads: attention heads per block.
    mlp_ratio: hidden width of the MLP over D.
    rngs: initialisation randomness.
  """

  def __init__(
    self,
    image_shape: tuple[int, int, int],
    patch_size: int,
    num_classes: int,
    d_model: int,
    num_layers: int,
    num_heads: int,
    mlp_ratio: int = 4,
    *,
    rngs: nnx.Rngs,
  ):
    H, W, C = image_shape
    self.patch_size = patch_size
    num_patches = (H // patch_size) * (W // patch_size)
    self.patch_embed = nnx.Linear(patch_size * patch_size * C, d_model, rngs=rngs)
    self.position_embed = position_embedding(num_patches, d_model, rngs)
    self.transformer = Transformer(
      num_layers, d_model, num_heads, mlp_ratio * d_model, causal=False, rngs=rngs
    )
    # A zero head starts from the uniform prediction (loss ln K), as in ViT.
    self.head = nnx.Linear(
      d_model, num_classes, kernel_init=nnx.initializers.zeros_init(), rngs=rngs
    )

  def __call__(self, images_BxHxWxC: jax.Array) -> jax.Array:
    """Images -> class logits B x K."""
    patches_BxNxQ = patchify(images_BxHxWxC, self.patch_size)
    x_BxNxD = self.patch_embed(patches_BxNxQ) + self.position_embed[...]
    return self.head(self.transformer(x_BxNxD).mean(axis=1))
