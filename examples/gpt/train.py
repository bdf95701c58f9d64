"""Trains a character-level GPT; evaluates validation loss in nats/char."""

import functools
import os

import jax
import jax.numpy as jnp
import optax
from flax import nnx

from examples.common import loop, mesh
from examples.gpt import input_pipeline, models, sampling
from examples.gpt.configs.default import Config

SAMPLE_FILE = "sample.txt"


def loss_fn(model: models.GPT, batch) -> tuple[jax.Array, dict]:
  """Mean next-character cross-entropy (nats/char)."""
  logits_BxLxV = model(batch["inputs"])
  loss_BxL = optax.softmax_cross_entropy_with_integer_labels(
    logits_BxLxV.astype(jnp.float32), batch["targets"]
  )
  return loss_BxL.mean(), {}


def eval_fn(model: models.GPT, batch) -> dict[str, jax.Array]:
  loss, _ = loss_fn(model, batch)
  count = batch["targets"].size
  return {"loss_sum": loss * count, "count": jnp.asarray(count, jnp.float32)}


def make_model(config: Config, vocab_size: int) -> models.GPT:
  return models.GPT(
    vocab_size,
    config.block_size,
    config.d_model,
    config.num_layers,
    config.num_heads,
    config.mlp_ratio,
    rngs=nnx.Rngs(config.seed),
  )


def make_task(config: Config, corpus: input_pipeline.CharCorpus) -> loop.Task:
  """The GPT as the training loop sees it."""
  val_batches = input_pipeline.eval_batches(
    corpus.val_ids,
    batch_size=config.batch_size,
    block_size=config.block_size,
    num_batches=config.eval_batches,
  )
  return loop.Task(
    make_model=functools.partial(make_model, config, corpus.vocab_size),
    loss_fn=loss_fn,
    train_batch=functools.partial(
      input_pipeline.train_batch,
      corpus.train_ids,
      batch_size=config.batch_size,
      block_size=config.block_size,
      seed=config.seed,
    ),
    eval_fn=eval_fn,
    eval_batches=lambda: val_batches,
    eval_metrics=lambda sums: {"val_loss": sums["loss_sum"] / sums["count"]},
    items_per_step=config.batch_size * config.block_size,
    unit="tokens",
  )


def write_sample(config: Config, corpus, graphdef, params, workdir: str) -> str:
  """Samples ``config.sample_chars`` characters; prints and saves them."""
  prompt = "".join(c for c in config.sample_prompt if c in corpus.vocab)
  prompt = prompt or corpus.decode(corpus.val_ids[:1])
  ids = sampling.sample(
    graphdef,
    params,
    corpus.encode(prompt),
    num_chars=config.sample_chars,
    block_size=config.block_size,
    temperature=config.sample_temperature,
    seed=config.seed,
  )
  text = prompt + corpus.decode(ids)
  with open(os.path.join(workdir, SAMPLE_FILE), "w", encoding="utf-8") as f:
    f.write(text)
  print(f"--- sample (temperature {config.sample_temperature}) ---\n{text}\n---")
  return text


def train_and_evaluate(config: Config, workdir: str) -> dict[str, float]:
  """Trains, resuming from ``workdir``; returns the final metrics.

  Writes ``metrics.jsonl``, ``loss_curves.png``, ``checkpoints/`` and
  ``sample.txt`` under ``workdir``.

  Raises:
    examples.common.config.ConfigError: for a field outside its range
      (``config.validate()``, first: nothing is built or written).
  """
  config.validate()
  corpus = input_pipeline.make_corpus(
    input_pipeline.read_text(config.data), config.val_fraction
  )
  metrics, graphdef, params = loop.train(config, workdir, make_task(config, corpus))
  if config.sample_chars > 0:
    params = mesh.replicate(params, mesh.make_mesh())  # all processes take part
    if jax.process_index() == 0:
      write_sample(config, corpus, graphdef, params, workdir)
  return metrics
