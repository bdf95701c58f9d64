"""Example trainers built on balanced_optax: a character GPT and a ViT."""
