"""GPT configs: ``default`` and ``tiny``."""
