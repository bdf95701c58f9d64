"""Character-level GPT trainer."""
