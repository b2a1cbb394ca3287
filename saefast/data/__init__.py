"""Where activations come from: corpora, models, the on-disk store, harvesting, streaming and
token windows."""
