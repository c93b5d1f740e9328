"""The fill-mask engine: load a model, run Hugging Face's fill-mask steps batched, and the errors."""
