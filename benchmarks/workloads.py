r"""Small training workloads, and the one helper that trains them.

Every benchmark and notebook that needs "train this model with this optimizer
and give me its validation history" calls :func:`train_grid` (a whole grid
of memories in one vmapped program, pure JAX) or :func:`train_gpt` (one run
of the full ``examples/gpt`` trainer, checkpoints and metrics included).

A :class:`Workload` is a model, a data stream and a training recipe, all pure
functions of their arguments:

* ``init(key) -> params``;
* ``loss(params, batch) -> scalar`` (the training loss; the validation loss
  is the same function on the fixed validation batch);
* ``train_batch(step, seed) -> batch``, traceable: the batch of a step is a
  pure function of ``(seed, step)``, so every memory of a grid, the pilot of
  :func:`balanced_optax.select_beta` and a rerun see the same data order;
* the recipe: peak learning rate with 5% linear warmup and cosine decay to
  10%, global-norm clipping and decoupled weight decay, identical for every
  memory of a grid.

:func:`train_grid` stacks one copy of the initial parameters and optimizer
state per memory, ``jax.vmap``\ s the jitted update over the memories (the
batch is shared, not mapped) and scans ``eval_every`` updates per compiled
call, so an 11-point grid costs one compilation and about eleven times one
run's arithmetic, without Python overhead per step.

The workloads (:func:`make_workload`):

  ===============  =========================================================
  ``gpt``          the character GPT of ``examples/gpt`` (``models.GPT``) on
                   the bundled Shakespeare corpus (the complete works)
  ``gpt_sonnets``  the same model on Shakespeare's Sonnets (verse, another
                   genre and vocabulary; the last 10% is the validation set)
  ``mlp_digits``   a 64-128-128-10 GELU MLP on scikit-learn's 8x8 digits
                   (1,497 train images, a tenth of their
                   labels redrawn at random; 300 clean validation images)
  ``conv_digits``  two 3x3 convolutions (16, 32 channels, the second
                   strided), mean pool and a linear head, same digits
  ``vit_digits``   the ViT of ``examples/vit`` (``models.ViT``), tiny (width
                   16, one block), on 2x2 patches of the same digits
  ``regression``   a 8-64-64-1 tanh MLP fitting a random teacher network
                   plus noise (squared loss)
  ``quadratic``    noisy linear regression with a heterogeneous spectrum:
                   features x ~ N(0, diag(h)), h log-spaced over 10^-2..10^2,
                   y = w* . x + noise; validation loss = the exact expected
                   loss 0.5 (sum h (w - w*)^2 + sigma^2)
  ===============  =========================================================

Example:
  >>> from benchmarks import workloads
  >>> w = workloads.make_workload("quadratic", num_steps=40, eval_every=20)
  >>> h = workloads.train_grid(w, betas=[0.9, 0.99])
  >>> print(h.val_loss.shape, h.steps.tolist())
  (2, 3) [0, 20, 40]
"""

import contextlib
import dataclasses
import functools
import io
import math
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

import balanced_optax as bo

# The selection grid of [FH26c] (docs/choosing_beta.md): 1 - beta = 10^(-k/4),
# k = 2..12.
SELECTION_GRID = tuple(round(1.0 - 10.0 ** (-k / 4), 5) for k in range(2, 13))


@dataclasses.dataclass(frozen=True)
class Workload:
  """A model, its data and its training recipe.

  Attributes:
    name: a label for tables.
    kind: ``"gpt"``, ``"mlp"``, ``"conv"``, ``"vit"``, ``"quadratic"`` or
      ``"regression"``.
    init: ``key -> params``.
    loss: ``(params, batch) -> scalar``.
    train_batch: ``(step, seed) -> batch``, traceable in ``step``.
    val_batch: the fixed validation batch.
    learning_rate: peak learning rate.
    num_steps: updates per run.
    eval_every: updates between validation evaluations.
    weight_decay: decoupled weight decay (AdamW's).
    clip_norm: global gradient-norm clip, or None.
    batch_size: examples per update (for the report).
  """

  name: str
  kind: str
  init: Callable[[jax.Array], Any]
  loss: Callable[[Any, Any], jax.Array]
  train_batch: Callable[[Any, int], Any]
  val_batch: Any
  learning_rate: float
  num_steps: int
  eval_every: int
  weight_decay: float = 0.0
  clip_norm: float | None = 1.0
  batch_size: int = 0

  def schedule(self) -> optax.Schedule:
    """5% linear warmup, cosine decay to 10% of the peak."""
    return optax.warmup_cosine_decay_schedule(
      0.0,
      self.learning_rate,
      warmup_steps=max(1, self.num_steps // 20),
      decay_steps=self.num_steps,
      end_value=0.1 * self.learning_rate,
    )

  def optimizer(self, b1, b2=None, lr_scale=1.0) -> optax.GradientTransformation:
    """The recipe with memory ``b1`` (balanced Adam) or untied ``(b1, b2)``.

    ``b2=None`` gives :func:`balanced_optax.balanced_adamw` (beta1 = beta2 =
    ``b1``); otherwise :func:`optax.adamw`. ``lr_scale`` multiplies the
    schedule (its peak becomes ``lr_scale * learning_rate``). Any of them may
    be traced.
    """
    schedule = self.schedule()
    if not (isinstance(lr_scale, (int, float)) and lr_scale == 1.0):
      base = schedule
      schedule = lambda count: lr_scale * base(count)
    if b2 is None:
      tx = bo.balanced_adamw(schedule, beta=b1, weight_decay=self.weight_decay)
    else:
      tx = optax.adamw(schedule, b1=b1, b2=b2, weight_decay=self.weight_decay)
    if self.clip_norm is None:
      return tx
    return optax.chain(optax.clip_by_global_norm(self.clip_norm), tx)


class History(NamedTuple):
  """Validation histories of a grid of runs.

  Attributes:
    steps: ``(E,)`` update counts of the evaluations (0 = before training).
    val_loss: ``(N, E)`` validation loss of each run at each evaluation
      (:func:`train_sweep`: ``(S, B, K, E)``, seeds x memories x learning
      rates).
    seconds: wall time of the whole grid, compilation included.
  """

  steps: np.ndarray
  val_loss: np.ndarray
  seconds: float

  @property
  def best(self) -> np.ndarray:
    """Lowest validation loss of each run (inf where none is finite).

    ``(N,)`` for :func:`train_grid`, ``(S, B, K)`` for :func:`train_sweep`.
    """
    loss = np.where(np.isfinite(self.val_loss), self.val_loss, np.inf)
    return loss.min(axis=-1)


def train_grid(
  workload: Workload,
  betas: Sequence[float] | None = None,
  *,
  untied: Sequence[tuple[float, float]] | None = None,
  seed: int = 0,
) -> History:
  """Trains ``workload`` once per memory, all memories in one vmapped program.

  Args:
    workload: the model, data and recipe.
    betas: balanced Adam memories (one run each).
    untied: instead of ``betas``, ``(beta1, beta2)`` pairs for AdamW.
    seed: initialisation and data-order seed, shared by every run.

  Returns:
    A :class:`History`; row i is ``betas[i]`` (or ``untied[i]``).
  """
  if (betas is None) == (untied is None):
    raise ValueError("pass exactly one of `betas` and `untied`.")
  if untied is None:
    b1 = jnp.asarray(betas, jnp.float32)
    b2 = None
  else:
    b1 = jnp.asarray([p[0] for p in untied], jnp.float32)
    b2 = jnp.asarray([p[1] for p in untied], jnp.float32)
  n = b1.shape[0]
  start = time.perf_counter()
  params = workload.init(jax.random.key(seed))
  stacked = jax.tree.map(lambda x: jnp.broadcast_to(x, (n, *x.shape)), params)
  grad_fn = jax.grad(workload.loss)

  def one_update(beta1, beta2, p, state, batch):
    tx = workload.optimizer(beta1, beta2)
    updates, state = tx.update(grad_fn(p, batch), state, p)
    return optax.apply_updates(p, updates), state

  if b2 is None:
    init_all = jax.vmap(lambda beta1, p: workload.optimizer(beta1).init(p))
    states = init_all(b1, stacked)
    update_all = jax.vmap(
      lambda beta1, _, p, s, batch: one_update(beta1, None, p, s, batch),
      in_axes=(0, None, 0, 0, None),
    )
    b2_arg = jnp.zeros(())
  else:
    init_all = jax.vmap(
      lambda beta1, beta2, p: workload.optimizer(beta1, beta2).init(p)
    )
    states = init_all(b1, b2, stacked)
    update_all = jax.vmap(one_update, in_axes=(0, 0, 0, 0, None))
    b2_arg = b2

  @functools.partial(jax.jit, donate_argnums=(0, 1))
  def chunk(p, s, first_step):
    def body(carry, step):
      p, s = carry
      return update_all(b1, b2_arg, p, s, workload.train_batch(step, seed)), None

    steps = first_step + jnp.arange(workload.eval_every)
    (p, s), _ = jax.lax.scan(body, (p, s), steps)
    return p, s

  evaluate = jax.jit(jax.vmap(lambda p: workload.loss(p, workload.val_batch)))
  steps, losses = [0], [np.asarray(evaluate(stacked))]
  p, s = stacked, states
  for first in range(0, workload.num_steps, workload.eval_every):
    p, s = chunk(p, s, jnp.asarray(first, jnp.int32))
    steps.append(first + workload.eval_every)
    losses.append(np.asarray(evaluate(p)))
  return History(
    np.asarray(steps), np.stack(losses, axis=1), time.perf_counter() - start
  )


def train_sweep(
  workload: Workload,
  betas: Sequence[float] | None = None,
  *,
  untied: Sequence[tuple[float, float]] | None = None,
  lr_scales: Sequence[float] = (1.0,),
  seeds: Sequence[int] = (0,),
) -> History:
  """Trains every (seed, memory, learning rate) of a grid in one vmapped program.

  :func:`train_grid` with two more axes: the peak learning rate is
  ``lr_scale * workload.learning_rate`` for each of ``lr_scales``, and each
  seed has its own initialisation and data order (the runs of one seed share
  its batches).

  Args:
    workload: the model, data and recipe.
    betas: balanced Adam memories.
    untied: instead of ``betas``, ``(beta1, beta2)`` pairs for AdamW.
    lr_scales: multipliers of the workload's peak learning rate.
    seeds: initialisation and data-order seeds.

  Returns:
    A :class:`History` whose ``val_loss`` is ``(S, B, K, E)``: seeds x
    memories (or pairs) x learning rates x evaluations.
  """
  if (betas is None) == (untied is None):
    raise ValueError("pass exactly one of `betas` and `untied`.")
  pairs = [(b, None) for b in betas] if untied is None else list(untied)
  num_b, num_k, num_s = len(pairs), len(lr_scales), len(seeds)
  b1 = jnp.asarray(np.repeat([p[0] for p in pairs], num_k), jnp.float32)
  b2 = jnp.asarray(np.repeat([p[1] or 0.0 for p in pairs], num_k), jnp.float32)
  lr = jnp.asarray(np.tile(lr_scales, num_b), jnp.float32)
  tied = untied is None
  seeds_s = jnp.asarray(seeds, jnp.int32)
  start = time.perf_counter()
  inits = [workload.init(jax.random.key(s)) for s in seeds]
  params = jax.tree.map(
    lambda *x: jnp.broadcast_to(
      jnp.stack(x)[:, None], (num_s, b1.shape[0], *x[0].shape)
    ),
    *inits,
  )
  grad_fn = jax.grad(workload.loss)

  def optimizer(beta1, beta2, scale):
    return workload.optimizer(beta1, None if tied else beta2, scale)

  def one_update(beta1, beta2, scale, p, state, batch):
    updates, state = optimizer(beta1, beta2, scale).update(grad_fn(p, batch), state, p)
    return optax.apply_updates(p, updates), state

  def over_configs(fn, in_axes):
    return jax.vmap(
      jax.vmap(fn, in_axes=in_axes), in_axes=(None,) * 3 + (0,) * (len(in_axes) - 3)
    )

  init_all = over_configs(lambda x, y, z, p: optimizer(x, y, z).init(p), (0, 0, 0, 0))
  update_all = over_configs(one_update, (0, 0, 0, 0, 0, None))
  states = init_all(b1, b2, lr, params)
  batches = jax.vmap(workload.train_batch, in_axes=(None, 0))

  @functools.partial(jax.jit, donate_argnums=(0, 1))
  def chunk(p, s, first_step):
    def body(carry, step):
      return update_all(b1, b2, lr, *carry, batches(step, seeds_s)), None

    steps = first_step + jnp.arange(workload.eval_every)
    (p, s), _ = jax.lax.scan(body, (p, s), steps)
    return p, s

  evaluate = jax.jit(jax.vmap(jax.vmap(lambda p: workload.loss(p, workload.val_batch))))
  steps, losses = [0], [np.asarray(evaluate(params))]
  p, s = params, states
  for first in range(0, workload.num_steps, workload.eval_every):
    p, s = chunk(p, s, jnp.asarray(first, jnp.int32))
    steps.append(first + workload.eval_every)
    losses.append(np.asarray(evaluate(p)))
  val_loss = np.stack(losses, axis=-1).reshape(num_s, num_b, num_k, -1)
  return History(np.asarray(steps), val_loss, time.perf_counter() - start)


# ----------------------------------------------------------------------------
# Workloads.


def _char_ids(text: str, val_fraction: float = 0.1):
  from examples.gpt import input_pipeline

  corpus = input_pipeline.make_corpus(text, val_fraction)
  return corpus.vocab_size, corpus.train_ids, corpus.val_ids


def sonnets_text() -> str:
  """Shakespeare's Sonnets, cut from the bundled corpus of ``examples/gpt``.

  The corpus is the complete works; the Sonnets (verse: another genre, a
  smaller vocabulary and a 95,000-character text) run from their title to the
  last line of sonnet CLIV.
  """
  from examples.gpt import input_pipeline

  text = input_pipeline.read_text()
  start = text.index("THE SONNETS")
  last_line = "water cools not love."
  return text[start : text.index(last_line, start) + len(last_line)]


class _Problem(NamedTuple):
  """A workload less its recipe: see :class:`Workload`."""

  init: Callable[[jax.Array], Any]
  loss: Callable[[Any, Any], jax.Array]
  train_batch: Callable[[Any, int], Any]
  val_batch: Any


def _gpt_problem(
  batch_size: int,
  *,
  text: str | None = None,
  block_size: int = 32,
  d_model: int = 32,
  num_layers: int = 2,
  num_heads: int = 2,
  val_windows: int = 256,
) -> _Problem:
  """The character GPT of ``examples/gpt`` (``models.GPT``)."""
  from flax import nnx

  from examples.gpt import input_pipeline, models

  if text is None:
    text = input_pipeline.read_text()
  vocab_size, train_np, val_np = _char_ids(text)
  train_ids = jnp.asarray(train_np)
  starts = np.linspace(0, len(val_np) - block_size - 2, val_windows).astype(np.int64)
  index = starts[:, None] + np.arange(block_size + 1)[None, :]
  val_windows_np = val_np[index]
  val_batch = {
    "inputs": jnp.asarray(val_windows_np[:, :-1]),
    "targets": jnp.asarray(val_windows_np[:, 1:]),
  }

  def build(key):
    return models.GPT(
      vocab_size, block_size, d_model, num_layers, num_heads, rngs=nnx.Rngs(key)
    )

  graphdef = nnx.graphdef(nnx.eval_shape(lambda: build(jax.random.key(0))))

  def init(key):
    return nnx.state(build(key), nnx.Param)

  def loss(params, batch):
    logits = nnx.merge(graphdef, params)(batch["inputs"])
    return optax.softmax_cross_entropy_with_integer_labels(
      logits.astype(jnp.float32), batch["targets"]
    ).mean()

  def train_batch(step, seed):
    key = jax.random.fold_in(jax.random.key(seed), step)
    s = jax.random.randint(key, (batch_size,), 0, train_ids.shape[0] - block_size - 1)
    window = train_ids[s[:, None] + jnp.arange(block_size + 1)[None, :]]
    return {"inputs": window[:, :-1], "targets": window[:, 1:]}

  return _Problem(init, loss, train_batch, val_batch)


def _digits(label_noise: float):
  """scikit-learn's digits in [-0.3, 0.7]: noisy training split, clean last 300.

  A ``label_noise`` share of the training labels is redrawn at random: the
  validation loss then has a floor and a best point before the end, rather
  than going to zero on this easy task.
  """
  from sklearn.datasets import load_digits

  x, y = load_digits(return_X_y=True)
  order = np.random.default_rng(0).permutation(len(y))
  x = (x[order] / 16.0 - 0.3).astype(np.float32)
  y = y[order].astype(np.int32)
  y_noisy = y[:-300].copy()
  flip = np.random.default_rng(1).random(len(y_noisy)) < label_noise
  y_noisy[flip] = np.random.default_rng(2).integers(0, 10, flip.sum())
  return (jnp.asarray(x[:-300]), jnp.asarray(y_noisy)), (
    jnp.asarray(x[-300:]),
    jnp.asarray(y[-300:]),
  )


def _classifier_problem(
  init, logits_fn, batch_size: int, label_noise: float
) -> _Problem:
  """A digits classifier: ``logits_fn(params, x_Bx64)``, cross-entropy loss."""
  (x_train, y_train), val_batch = _digits(label_noise)

  def loss(params, batch):
    x, labels = batch
    return optax.softmax_cross_entropy_with_integer_labels(
      logits_fn(params, x), labels
    ).mean()

  def train_batch(step, seed):
    key = jax.random.fold_in(jax.random.key(seed), step)
    i = jax.random.randint(key, (batch_size,), 0, x_train.shape[0])
    return x_train[i], y_train[i]

  return _Problem(init, loss, train_batch, val_batch)


def _dense_init(key, sizes):
  keys = jax.random.split(key, len(sizes) - 1)
  return [
    {"w": jax.random.normal(k, (m, n)) / math.sqrt(m), "b": jnp.zeros(n)}
    for k, m, n in zip(keys, sizes[:-1], sizes[1:], strict=True)
  ]


def _dense_apply(params, h, activation=jax.nn.gelu):
  for layer in params[:-1]:
    h = activation(h @ layer["w"] + layer["b"])
  return h @ params[-1]["w"] + params[-1]["b"]


def _mlp_digits_problem(
  batch_size: int, *, hidden: int = 128, label_noise: float = 0.1
) -> _Problem:
  """A 64-hidden-hidden-10 GELU MLP on scikit-learn's digits, noisy labels."""
  sizes = (64, hidden, hidden, 10)
  return _classifier_problem(
    lambda key: _dense_init(key, sizes), _dense_apply, batch_size, label_noise
  )


def _conv_digits_problem(
  batch_size: int, *, channels: int = 16, label_noise: float = 0.1
) -> _Problem:
  """Two 3x3 GELU convolutions (the second strided), mean pool, linear head."""
  c = channels
  shapes = {"conv1": (3, 3, 1, c), "conv2": (3, 3, c, 2 * c), "head": (2 * c, 10)}

  def init(key):
    keys = dict(zip(shapes, jax.random.split(key, len(shapes)), strict=True))
    return {
      name: {
        "w": jax.random.normal(keys[name], shape) / math.sqrt(math.prod(shape[:-1])),
        "b": jnp.zeros(shape[-1]),
      }
      for name, shape in shapes.items()
    }

  def conv(layer, x_BxHxWxC, stride):
    # 3x3 "same" convolution as one matmul over the 9 shifted copies: vmapped
    # over a grid's weights it stays a batched matmul (a vmapped
    # lax.conv_general_dilated becomes a grouped convolution, slow on CPU).
    _, H, W, _ = x_BxHxWxC.shape
    padded = jnp.pad(x_BxHxWxC, ((0, 0), (1, 1), (1, 1), (0, 0)))
    shifts = [
      padded[:, i : i + H : stride, j : j + W : stride]
      for i in range(3)
      for j in range(3)
    ]
    w = layer["w"].reshape(-1, layer["w"].shape[-1])
    return jax.nn.gelu(jnp.concatenate(shifts, axis=-1) @ w + layer["b"])

  def logits(params, x_Bx64):
    x = x_Bx64.reshape(-1, 8, 8, 1)
    x = conv(params["conv2"], conv(params["conv1"], x, 1), 2)
    return x.mean(axis=(1, 2)) @ params["head"]["w"] + params["head"]["b"]

  return _classifier_problem(init, logits, batch_size, label_noise)


def _vit_digits_problem(
  batch_size: int,
  *,
  d_model: int = 16,
  num_layers: int = 1,
  num_heads: int = 2,
  label_noise: float = 0.1,
) -> _Problem:
  """The ViT of ``examples/vit`` (``models.ViT``), tiny, on 2x2 digit patches."""
  from flax import nnx

  from examples.vit import models

  def build(key):
    return models.ViT(
      (8, 8, 1), 2, 10, d_model, num_layers, num_heads, 2, rngs=nnx.Rngs(key)
    )

  graphdef = nnx.graphdef(nnx.eval_shape(lambda: build(jax.random.key(0))))

  def logits(params, x_Bx64):
    return nnx.merge(graphdef, params)(x_Bx64.reshape(-1, 8, 8, 1))

  return _classifier_problem(
    lambda key: nnx.state(build(key), nnx.Param), logits, batch_size, label_noise
  )


def _regression_problem(
  batch_size: int, *, dim: int = 8, hidden: int = 64, noise: float = 0.3
) -> _Problem:
  r"""A tanh MLP regressing a random teacher network's output plus noise.

  Inputs :math:`x \sim N(0, I_8)`, targets :math:`y = f^*(x) + \sigma\xi`
  with :math:`f^*` a fixed random 8-32-1 tanh network (scaled to unit
  variance); squared loss; the validation batch is 1,024 fixed noisy pairs.
  """
  teacher = _dense_init(jax.random.key(4321), (dim, 32, 1))

  def target(x):
    return 1.5 * _dense_apply(teacher, x, jnp.tanh)[:, 0]

  def pairs(key, n):
    kx, ky = jax.random.split(key)
    x = jax.random.normal(kx, (n, dim))
    return x, target(x) + noise * jax.random.normal(ky, (n,))

  def loss(params, batch):
    x, y = batch
    return 0.5 * jnp.mean((_dense_apply(params, x, jnp.tanh)[:, 0] - y) ** 2)

  def train_batch(step, seed):
    return pairs(jax.random.fold_in(jax.random.key(seed), step), batch_size)

  return _Problem(
    lambda key: _dense_init(key, (dim, hidden, hidden, 1)),
    loss,
    train_batch,
    pairs(jax.random.key(99), 1024),
  )


def _quadratic_problem(
  batch_size: int, *, dim: int = 64, noise: float = 1.0
) -> _Problem:
  r"""Noisy linear regression with a heterogeneous feature spectrum.

  Features :math:`x \sim N(0, \mathrm{diag}(h))` with :math:`h` log-spaced
  over :math:`[10^{-2}, 10^2]`, targets :math:`y = w^* \cdot x + \sigma
  \xi`; the training loss is the batch mean of :math:`(w \cdot x - y)^2 /
  2`, the validation loss its exact expectation :math:`\tfrac12(\sum_i h_i
  (w_i - w_i^*)^2 + \sigma^2)` (its floor is the noise, :math:`\sigma^2/2`).
  """
  h = jnp.logspace(-2, 2, dim)
  w_star = jax.random.normal(jax.random.key(1234), (dim,))

  def init(key):
    del key  # one starting point, w = 0, for every seed; the data order varies
    return {"w": jnp.zeros(dim)}

  def loss(params, batch):
    if batch is None:  # the validation "batch": the exact expectation
      return 0.5 * (jnp.sum(h * (params["w"] - w_star) ** 2) + noise**2)
    x, y = batch
    return 0.5 * jnp.mean((x @ params["w"] - y) ** 2)

  def train_batch(step, seed):
    kx, ky = jax.random.split(jax.random.fold_in(jax.random.key(seed), step))
    x = jax.random.normal(kx, (batch_size, dim)) * jnp.sqrt(h)
    y = x @ w_star + noise * jax.random.normal(ky, (batch_size,))
    return x, y

  return _Problem(init, loss, train_batch, None)


class _Recipe(NamedTuple):
  """A kind's default recipe: the :class:`Workload` fields it overrides."""

  batch_size: int
  num_steps: int
  eval_every: int
  learning_rate: float
  weight_decay: float
  clip_norm: float | None


_GPT = (_gpt_problem, _Recipe(16, 600, 30, 6e-3, 1e-4, 1.0))
# Per kind: its problem, its default recipe, and the problem's fixed arguments
# (a callable is called when the workload is made).
_KINDS: dict[str, tuple[Callable[..., _Problem], _Recipe, dict[str, Any]]] = {
  "gpt": (*_GPT, {}),
  "gpt_sonnets": (*_GPT, {"text": sonnets_text}),
  "mlp_digits": (_mlp_digits_problem, _Recipe(32, 1000, 50, 3e-3, 1e-4, 1.0), {}),
  "quadratic": (_quadratic_problem, _Recipe(8, 1000, 50, 3e-2, 0.0, None), {}),
  "conv_digits": (_conv_digits_problem, _Recipe(32, 1000, 50, 3e-3, 1e-4, 1.0), {}),
  "vit_digits": (_vit_digits_problem, _Recipe(32, 1000, 50, 2e-3, 1e-4, 1.0), {}),
  "regression": (_regression_problem, _Recipe(16, 1000, 50, 3e-3, 0.0, 1.0), {}),
}


def make_workload(kind: str, name: str | None = None, **overrides) -> Workload:
  """A workload by kind (see the module docstring), with field overrides.

  ``overrides`` may set :class:`Workload`'s recipe fields (``num_steps``,
  ``learning_rate``, ...) and the problem's own arguments (``d_model``,
  ``hidden``, ``dim``, ...); ``name`` defaults to ``kind``.
  """
  if kind not in _KINDS:
    raise ValueError(f"kind={kind!r} is not one of {', '.join(map(repr, _KINDS))}.")
  problem, default, fixed = _KINDS[kind]
  recipe = default._asdict()
  recipe.update({k: v for k, v in overrides.items() if k in recipe})
  args = {k: v() if callable(v) else v for k, v in fixed.items()}
  args.update({k: v for k, v in overrides.items() if k not in recipe})
  return Workload(
    name or kind,
    kind.split("_")[0],  # gpt_sonnets is a gpt
    *problem(recipe["batch_size"], **args),
    **recipe,
  )


# ----------------------------------------------------------------------------
# The full trainer of examples/gpt, one run.


def train_gpt(base_config, workdir: str | None = None, **fields) -> np.ndarray:
  """One run of ``examples.gpt.train.train_and_evaluate``; its validation history.

  The trainer's own path (its data pipeline, checkpoints and metrics file),
  for results that must be the trainer's. ``fields`` override ``base_config``
  (a dataclass or an ``ml_collections.ConfigDict``). The run starts from
  scratch in ``workdir`` (a fresh temporary directory if None, removed
  afterwards); the trainer's log lines are swallowed.

  Args:
    base_config: the trainer's config.
    workdir: where the run writes; an existing directory is emptied first.
    **fields: config fields to override.

  Returns:
    ``(E, 2)`` array of ``(step, val_loss)`` rows, one per evaluation.
  """
  from examples.common import metrics as metrics_lib
  from examples.gpt import train

  if dataclasses.is_dataclass(base_config):
    config = dataclasses.replace(base_config, **fields)
  else:
    config = base_config.copy_and_resolve_references()
    config.update(fields)
  temporary = workdir is None
  workdir = workdir or tempfile.mkdtemp(prefix="train_gpt_")
  shutil.rmtree(workdir, ignore_errors=True)  # never resume an older run
  try:
    with contextlib.redirect_stdout(io.StringIO()):
      train.train_and_evaluate(config, workdir)
    history = metrics_lib.read_history(os.path.join(workdir, metrics_lib.METRICS_FILE))
  finally:
    if temporary:
      shutil.rmtree(workdir, ignore_errors=True)
  rows = [(r["step"], r["val_loss"]) for r in history if "val_loss" in r]
  return np.asarray(rows, dtype=np.float64).reshape(-1, 2)
