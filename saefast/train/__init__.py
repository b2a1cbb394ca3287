"""Top-K SAEs and their training on tensors: the model (`sae`), the multi-seed trainer
(`trainer`), the GPU's sync-free step and CUDA graphs, checkpoints, evaluation metrics and the
memory a pass needs. Reads activations through `saefast.data`; knows nothing of run
directories, reports or sweeps."""
