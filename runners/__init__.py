"""The code that computes: model loading, generation, perplexity scoring (torch/transformers live here)."""
