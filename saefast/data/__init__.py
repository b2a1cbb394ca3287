"""Where activations come from, one job (and at most one file format) per module:

- `corpora`: text corpora by name (built-ins, local .txt/.jsonl/folders, ``hf:``), in a fixed
  order, with content fingerprints.
- `models`: the model zoo and loading (TransformerLens, imported lazily), tokenization
  (`Framing`), the cache root; owns the de-quantized Gemma weights and the weight-hash memo.
- `store`: the on-disk activation store, the one owner of its format: key and layout, the
  writer, and both readers (`load_activations`, memory-mapped `StoreSource`). Its write lock:
  `store_lock` (a folder a failed harvest created is removed).
- `names`, `corpus_size`: a sweep's model, hook and corpus names, and a built-in corpus's
  token count (estimated from its characters), checked before anything loads.
- `harvest`: runs a model over a corpus into stores, resumably; progress by callback.
- `stream`: `StreamSource`, the same tokens computed by the model as training reads them.
- `windows`: token sources and the resumable window schedule training reads them in.
- `moments`: what the data-shaped nulls need to know of activations, computed where they are:
  `ActivationMoments` (streaming float64 mean and covariance) and `TokenPool` (vectors by
  distinct token id).
- `surrogate`: `SurrogateSource`, activations with the data's mean and covariance and no sparse
  structure (gaussian, or elliptical: each real token's Mahalanobis norm kept), generated
  chunk by chunk as training reads them; what the trained null trains on.
- `stream_nulls`: a streamed pass's moments and token pool, gathered from its own forward
  batches and kept under OUT/runs/.null_data/ (streamed runs have no store to read them from).
- `coverage`: how many tokens each corpus holds for a model (`saefast corpora`).
- `math_text`, `multilingual`: the generated math corpus and the optional multilingual one.

Importing this package imports none of them.
"""
