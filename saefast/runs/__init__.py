"""Run directories: the layout of a sweep's OUT folder, writing ours, and reading ours, the
original study's and other tools' (SAELens, sparsify, dictionary_learning). One owner per file
format; everything above reads runs through here."""
