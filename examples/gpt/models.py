"""A GPT-style decoder-only transformer over characters (Flax NNX).

Shapes in names: B batch, L context length, D model width, V vocabulary.
"""

import jax
from flax import nnx

from examples.common.transformer import Transformer, embedding_init, position_embedding


class GPT(nnx.Module):
  """Token + learned position embeddings, causal blocks, a linear read-out.

  Args:
    vocab_size: V.
    block_size: the longest context L.
    d_model: D.
    num_layers: number of transformer blocks.
    num_heads: attention heads per block.
    mlp_ratio: hidden width of the MLP over D.
    rngs: initialisation randomness.
  """

  def __init__(
    self,
    vocab_size: int,
    block_size: int,
    d_model: int,
    num_layers: int,
    num_heads: int,
    mlp_ratio: int = 4,
    *,
    rngs: nnx.Rngs,
  ):
    self.token_embed = nnx.Embed(
      vocab_size, d_model, embedding_init=embedding_init, rngs=rngs
    )
    self.position_embed = position_embedding(block_size, d_model, rngs)
    self.transformer = Transformer(
      num_layers, d_model, num_heads, mlp_ratio * d_model, causal=True, rngs=rngs
    )
    # Small read-out weights: the initial prediction is near uniform, so the
    # first loss is near ln(V).
    self.readout = nnx.Linear(
      d_model, vocab_size, kernel_init=embedding_init, rngs=rngs
    )

  def embed(self, tokens_BxL: jax.Array) -> jax.Array:
    """Token ids -> input vectors x_BxLxD."""
    L = tokens_BxL.shape[1]
    return self.token_embed(tokens_BxL) + self.position_embed[:L]

  def logits_from_embeddings(self, x_BxLxD: jax.Array) -> jax.Array:
    """Input vectors -> next-token logits_BxLxV (position t sees <= t only)."""
    return self.readout(self.transformer(x_BxLxD))

  def __call__(self, tokens_BxL: jax.Array) -> jax.Array:
    return self.logits_from_embeddings(self.embed(tokens_BxL))
