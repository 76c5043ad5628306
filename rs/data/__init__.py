"""Input: dataset sources, preprocessing and deterministic batching (no model code here)."""
