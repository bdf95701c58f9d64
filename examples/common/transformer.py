"""The pre-LayerNorm transformer both examples are built on (Flax NNX).

Shapes in names: B batch, L sequence length, D model width, H heads, K width
per head (D = H K), F hidden width of the MLP.
"""

import jax
import jax.numpy as jnp
from flax import nnx

# Small embeddings (GPT-2's 0.02) next to unit-variance LayerNorm outputs.
embedding_init = nnx.initializers.normal(stddev=0.02)


def position_embedding(num_positions: int, d_model: int, rngs: nnx.Rngs) -> nnx.Param:
  """A learned vector per position, num_positions x D."""
  return nnx.Param(embedding_init(rngs.params(), (num_positions, d_model)))


class SelfAttention(nnx.Module):
  """Multi-head self-attention: softmax(q k^T / sqrt(K)) v, per head.

  With ``causal=True`` position t attends to positions <= t only: the masked
  scores are set to the most negative float, whose softmax weight is exactly
  0, so no information (and no gradient) flows from the future.
  """

  def __init__(self, d_model: int, num_heads: int, *, causal: bool, rngs: nnx.Rngs):
    if d_model % num_heads:
      raise ValueError(f"d_model={d_model} is not divisible by num_heads={num_heads}")
    self.num_heads = num_heads
    self.causal = causal
    self.qkv = nnx.Linear(d_model, 3 * d_model, rngs=rngs)
    self.out = nnx.Linear(d_model, d_model, rngs=rngs)

  def __call__(self, x_BxLxD: jax.Array) -> jax.Array:
    B, L, D = x_BxLxD.shape
    H = self.num_heads
    K = D // H
    qkv_BxLx3xHxK = self.qkv(x_BxLxD).reshape(B, L, 3, H, K)
    q_BxLxHxK, k_BxLxHxK, v_BxLxHxK = jnp.unstack(qkv_BxLx3xHxK, axis=2)
    scores_BxHxLxL = jnp.einsum("blhk,bmhk->bhlm", q_BxLxHxK, k_BxLxHxK) / jnp.sqrt(K)
    if self.causal:
      past_LxL = jnp.tril(jnp.ones((L, L), dtype=bool))
      scores_BxHxLxL = jnp.where(
        past_LxL, scores_BxHxLxL, jnp.finfo(scores_BxHxLxL.dtype).min
      )
    weights_BxHxLxL = jax.nn.softmax(scores_BxHxLxL, axis=-1)
    out_BxLxHxK = jnp.einsum("bhlm,bmhk->blhk", weights_BxHxLxL, v_BxLxHxK)
    return self.out(out_BxLxHxK.reshape(B, L, D))


class Mlp(nnx.Module):
  """D -> F -> D with a GELU in between."""

  def __init__(self, d_model: int, d_hidden: int, *, rngs: nnx.Rngs):
    self.up = nnx.Linear(d_model, d_hidden, rngs=rngs)
    self.down = nnx.Linear(d_hidden, d_model, rngs=rngs)

  def __call__(self, x_BxLxD: jax.Array) -> jax.Array:
    return self.down(jax.nn.gelu(self.up(x_BxLxD)))


class Block(nnx.Module):
  """x + attention(norm(x)), then x + mlp(norm(x))."""

  def __init__(
    self, d_model: int, num_heads: int, d_hidden: int, *, causal: bool, rngs: nnx.Rngs
  ):
    self.attention_norm = nnx.LayerNorm(d_model, rngs=rngs)
    self.attention = SelfAttention(d_model, num_heads, causal=causal, rngs=rngs)
    self.mlp_norm = nnx.LayerNorm(d_model, rngs=rngs)
    self.mlp = Mlp(d_model, d_hidden, rngs=rngs)

  def __call__(self, x_BxLxD: jax.Array) -> jax.Array:
    x_BxLxD = x_BxLxD + self.attention(self.attention_norm(x_BxLxD))
    return x_BxLxD + self.mlp(self.mlp_norm(x_BxLxD))


class Transformer(nnx.Module):
  """A stack of ``num_layers`` blocks and a final LayerNorm."""

  def __init__(
    self,
    num_layers: int,
    d_model: int,
    num_heads: int,
    d_hidden: int,
    *,
    causal: bool,
    rngs: nnx.Rngs,
  ):
    self.blocks = nnx.List(
      [
        Block(d_model, num_heads, d_hidden, causal=causal, rngs=rngs)
        for _ in range(num_layers)
      ]
    )
    self.final_norm = nnx.LayerNorm(d_model, rngs=rngs)

  def __call__(self, x_BxLxD: jax.Array) -> jax.Array:
    for block in self.blocks:
      x_BxLxD = block(x_BxLxD)
    return self.final_norm(x_BxLxD)
