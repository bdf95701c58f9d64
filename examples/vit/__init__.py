"""Vision Transformer trainer."""
