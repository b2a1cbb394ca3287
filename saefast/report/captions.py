"""What each summary table's columns mean, written once: the terminal tables (cli/tables.py)
and the HTML page (report/html_groups.py) print the same captions under the same column
names. Plain strings, no markup."""

from __future__ import annotations

STABILITY_COLUMNS = ("pairs", "median", "90% CI", ">=.5/.7/.9", "null", "live")
STABILITY = (
    "median: pooled over every pair's matched cosines, with its 90% interval over runs "
    "(delete-one-run jackknife, t(S-1); the run is the independent unit). >=.5/.7/.9: "
    "fraction of matched pairs at or above. null: the same matching of random isotropic "
    "unit dictionaries of the same shapes (a null shaped like the activations is higher). "
    "live: the median matching live features only. -: not computed.")

NULLS = (
    "null medians: isotropic (two untrained SAEs) / covariance (random rows drawn with "
    "the training activations' covariance) / activations (centred activations of distinct "
    "tokens). over: the pooled median "
    "minus that null's median, [90% interval over runs]. "
    "PW-MCC: the mean matched cosine [90% interval over runs]; PW-MCC over: it minus that "
    "null's mean matched cosine [90%]. "
    "-: not computed (no activation store, or too few distinct tokens: the reason is in "
    "stability.json).")
DICTIONARY_COLUMN = ("dict: random rows in the decoders' own subspace (the same subspace is "
                     "not the same features).")  # the page's share table has a dict column
SPECTRUM_COLUMN = ("spec: each run against the other rotated at random within bands of the "
                   "activations' eigen-spectrum, so each feature is judged against its own place "
                   "in the spectrum (exact where the spectrum is flat within a band; in the "
                   "share table, features each side of each pair).")  # page columns only
DICTIONARY_TABLE = (
    "dict null median: random rows drawn with the decoders' own covariance (the mean over "
    "runs of U^T U / n of the unit decoder rows). over dict: the pooled median minus it; share: "
    "features beyond it (as in the table above) [90% intervals over runs]. "
    + DICTIONARY_COLUMN + " A table of its own, since the others have no room for it "
    "within 80 columns.")  # the terminal only: the page has these as columns
TRAINED = (
    "trained null: the group's recipe and first seeds retrained on a surrogate with the "
    "activations' mean and covariance and no sparse structure; median: its pairs' matched "
    "cosines pooled. over: the mean over pairs (s, t) of the real pair's median minus the "
    "null pair's; PW-MCC over: the same for the mean matched cosine [90% intervals over "
    "runs, real and null run of a seed left out together]. Groups without one: the reason "
    "is in stability.json (summary.nulls.kinds).")

BEYOND_CHANCE = (
    "share: features whose nearest cosine in the other run beats the null's, the null "
    "matched to the observed bulk (1 - Storey's pi0) [90% interval over runs, jackknife]. iso: two untrained SAEs; "
    "beating it does not yet mean the same features were found. cov / act: dictionaries "
    "shaped like the activations, the nulls that matter. -: not computed.")
VERDICT = (
    "beyond chance: the share of features that recur beyond the null that explains the most "
    "[90% over runs]: the smallest over the data-shaped nulls (cov, act, dict, ...) whose fit "
    "to the observed bulk holds, each matched to that bulk so that a shift of every feature "
    "is not counted; null: which one. BY: matched pairs significant under it (FDR 5%). "
    "shift: how far the observed bulk sits above that null, in null SDs.")
VERDICT_COLUMNS = ("beyond chance", "null", "BY", "shift")
BY_COLUMNS = ("BY: fraction of matched pairs significant at FDR 5% (Benjamini-Yekutieli "
              "within each pair).")  # the page has these columns, the terminal has not

EQUIVALENCE_COLUMNS = ("shared", "r", "same", "both")
EQUIVALENCE = (
    "shared: decoder-matched pairs whose encoder rows also match at the threshold "
    "[90% interval over runs]. r: median Pearson correlation of the matched pairs' "
    "held-out activations [90%], leaving out pairs with a feature that never fires there "
    "(no r; their count is in summary.json). same: features whose max-correlation partner is their "
    "decoder partner. both: pairs the correlation matching and the decoder matching both "
    "pick. -: not computed (see stability.json summary.equivalence.skipped).")

FLOORS_COLUMNS = ("enc", "floor", "over it", "r floor", "r > q95")
FLOORS = (
    "each view against chance (stats.view_nulls). enc: median encoder cosine of the "
    "decoder-matched pairs; floor: the same with each feature's partner a random other "
    "matched feature (mismatched pairs); over it: the excess [90% over runs, observed and "
    "floor jackknifed together]. r floor: mean/95% quantile of the matched pairs' r with one "
    "run's held-out tokens permuted in blocks of contiguous tokens (unrelated features with "
    "the same firing); r > q95: matched pairs above that quantile [90%] (.05 by chance). "
    "-: not computed.")

TRAINING_COLUMNS = ("runs", "dead", "cos to init", "FVU")
TRAINING = (
    "dead: never fired on the training tokens. cos to init: decoder rows vs their random "
    "init (near 1: barely trained). FVU: held-out fraction of variance unexplained. Means "
    "over the group's runs.")

# the README's "How to read it", on the page itself: a shared page travels without the README
HOW_TO_READ = (
    "Start with the verdict above: the share of features that recur beyond chance [90% "
    "interval over runs] against the data-shaped null that explains the most; 'the same "
    "subspace' means the dictionaries agree no more than random directions in the "
    "activations' own subspace would.",
    "The run (seed), not the pair or the feature, is the independent unit: every interval is "
    "over runs (delete-one-run jackknife), so 5 seeds give rough intervals.",
    "Beating the isotropic null only shows that training moved the decoders into the "
    "activations' subspace; the covariance, activation, dictionary and trained nulls are the "
    "ones that decide whether features recur.",
    "The trained null is the same recipe trained on Gaussian surrogate activations with the "
    "data's mean and covariance: agreement above it is agreement that second-order statistics "
    "and the training recipe do not explain.",
    "The per-group sections below hold the evidence: medians and PW-MCC with their nulls, the "
    "seed-count curve (features found in all or half of the other runs), training health "
    "(dead share, cosine to init: decoders still near their init have not learned).",
)
