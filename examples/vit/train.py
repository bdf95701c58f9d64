"""Trains a ViT classifier; evaluates test accuracy."""

import functools

import jax
import jax.numpy as jnp
import optax
from flax import nnx

from examples.common import loop
from examples.vit import input_pipeline, models
from examples.vit.configs.default import Config


def loss_fn(model: models.ViT, batch) -> tuple[jax.Array, dict]:
  """Mean softmax cross-entropy; also the batch's accuracy."""
  logits_BxK = model(batch["images"])
  loss_B = optax.softmax_cross_entropy_with_integer_labels(logits_BxK, batch["labels"])
  accuracy = jnp.mean(jnp.argmax(logits_BxK, -1) == batch["labels"])
  return loss_B.mean(), {"train_accuracy": accuracy}


def eval_fn(model: models.ViT, batch) -> dict[str, jax.Array]:
  """Sums over the real (``mask`` = 1) examples of the batch."""
  logits_BxK = model(batch["images"])
  loss_B = optax.softmax_cross_entropy_with_integer_labels(logits_BxK, batch["labels"])
  correct_B = jnp.argmax(logits_BxK, -1) == batch["labels"]
  mask_B = batch["mask"]
  return {
    "loss_sum": jnp.sum(loss_B * mask_B),
    "correct": jnp.sum(correct_B * mask_B),
    "count": jnp.sum(mask_B),
  }


def make_task(config: Config, data: input_pipeline.ImageDataset) -> loop.Task:
  """The ViT as the training loop sees it."""

  def make_model() -> models.ViT:
    return models.ViT(
      data.train_images.shape[1:],
      config.patch_size,
      data.num_classes,
      config.d_model,
      config.num_layers,
      config.num_heads,
      config.mlp_ratio,
      rngs=nnx.Rngs(config.seed),
    )

  test_batches = input_pipeline.eval_batches(
    data.test_images, data.test_labels, batch_size=config.batch_size
  )
  return loop.Task(
    make_model=make_model,
    loss_fn=loss_fn,
    train_batch=functools.partial(
      input_pipeline.train_batch,
      data.train_images,
      data.train_labels,
      batch_size=config.batch_size,
      seed=config.seed,
    ),
    eval_fn=eval_fn,
    eval_batches=lambda: test_batches,
    eval_metrics=lambda sums: {
      "eval_loss": sums["loss_sum"] / sums["count"],
      "eval_accuracy": sums["correct"] / sums["count"],
    },
    items_per_step=config.batch_size,
    unit="images",
  )


def train_and_evaluate(config: Config, workdir: str) -> dict[str, float]:
  """Trains, resuming from ``workdir``; returns the final metrics.

  Writes ``metrics.jsonl``, ``loss_curves.png`` and ``checkpoints/`` under
  ``workdir``.

  Raises:
    examples.common.config.ConfigError: for a field outside its range
      (``config.validate()``, first: nothing is built or written).
  """
  config.validate()
  task = make_task(config, input_pipeline.load(config.data))
  metrics, _, _ = loop.train(config, workdir, task)
  return metrics
