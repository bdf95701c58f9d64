"""Shared by the trainers: loop, steps, mesh, checkpoints, metrics, optimizers."""
