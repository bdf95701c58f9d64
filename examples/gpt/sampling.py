"""Sampling text from a trained GPT, the whole loop inside one jit.

Each new character is drawn from softmax(logits / temperature) at the last
position of the context, the context being the last ``block_size`` characters.
Because the model is causal, a window that runs past the text's end reads
the logits of its last real position and ignores the padding after it.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx


@functools.partial(jax.jit, static_argnames=("graphdef", "num_chars", "block_size"))
def _generate(
  graphdef, params, buffer_T, prompt_length, key, temperature, *, num_chars, block_size
):
  model = nnx.merge(graphdef, params)

  def add_char(i, buffer_T):
    length = prompt_length + i  # characters in the buffer so far
    start = jnp.maximum(length - block_size, 0)
    window_L = jax.lax.dynamic_slice(buffer_T, (start,), (block_size,))
    logits_V = model(window_L[None])[0, length - 1 - start]
    char = jax.random.categorical(jax.random.fold_in(key, i), logits_V / temperature)
    return buffer_T.at[length].set(char.astype(buffer_T.dtype))

  return jax.lax.fori_loop(0, num_chars, add_char, buffer_T)


def sample(
  graphdef: nnx.GraphDef,
  params,
  prompt_ids: np.ndarray,
  *,
  num_chars: int,
  block_size: int,
  temperature: float = 0.8,
  seed: int = 0,
) -> np.ndarray:
  """Continues ``prompt_ids`` by ``num_chars`` sampled ids.

  Args:
    graphdef: the model's structure (``nnx.split``).
    params: its parameters.
    prompt_ids: at least one id; only its last ``block_size`` are seen.
    num_chars: how many ids to add.
    block_size: the model's context length.
    temperature: > 0; lower is more conservative.
    seed: the same seed gives the same text.

  Returns:
    The ``num_chars`` new ids (the prompt not included).
  """
  prompt_ids = np.asarray(prompt_ids, np.int32)[-block_size:]
  if not len(prompt_ids):
    raise ValueError("the prompt needs at least one character")
  total = len(prompt_ids) + num_chars
  buffer_T = np.zeros(max(total, block_size), np.int32)
  buffer_T[: len(prompt_ids)] = prompt_ids
  params = jax.device_get(params)  # sampling is small: one device
  out_T = _generate(
    graphdef,
    params,
    buffer_T,
    len(prompt_ids),
    jax.random.key(seed),
    temperature,
    num_chars=num_chars,
    block_size=block_size,
  )
  return np.asarray(out_T)[len(prompt_ids) : total]
