"""indexer: normalise, chunk, embed, build and load the index."""
