"""Pure statistics: matchings and dictionaries in, numbers out. Matched-cosine summaries, every
null (isotropic, covariance, activation-sampled, and the `NullModel` seam through which a null
enters the evidence), inference over seeds, recurrence, per-feature evidence, equivalence views,
ablation and trends. Nothing here writes a report file."""
