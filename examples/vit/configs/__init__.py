"""ViT configs: ``default`` and ``tiny``."""
