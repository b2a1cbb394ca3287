"""Pure statistics: matchings and dictionaries in, numbers out. Matched-cosine summaries, every
null (isotropic, covariance, activation-sampled, and the `NullModel` seam through which a null
enters the evidence), inference over seeds, recurrence, per-feature evidence, equivalence views,
ablation and trends, and the summary's nulls block (`null_summary`). Nothing here reads a run
directory, touches the matching cache or writes a file (ablation loads the model it measures);
`saefast.report` reads and matches, then calls these."""
