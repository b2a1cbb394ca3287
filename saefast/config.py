"""Dataclass configs: one section per stage, YAML keys are the field names.

A run is fully described by a `RunConfig`; everything that changes its result lives here
and is written to the run's `run.json`. Defaults are chosen for the offline default model
(all-MiniLM-L6-v2, d=384) on a laptop; `experiments/seed_repro.yaml` spells out every value
the original study used so that changing a default never changes the study.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any


class ConfigError(ValueError):
    """A config that cannot be run: unknown key, bad value. The message names the key."""


@dataclass
class ModelConfig:
    name: str = "minilm"
    """Built-in model (`minilm`, `gemma-270m`), a Hugging Face name, or a local directory."""
    hook: str = "blocks.0.hook_resid_pre"
    """TransformerLens hook point whose activations the SAE is trained on."""
    context_length: int = 128
    """Tokens per forward pass; longer documents are cut into chunks of this length."""
    device: str = "cpu"
    """Torch device for the model forward pass and training (`cpu`, `cuda`, `cuda:1`)."""
    drop_special_tokens: bool = True
    """Drop BOS/CLS/SEP/PAD positions: their activations are huge outliers that would
    dominate a small SAE's reconstruction loss and are not features of the text."""


@dataclass
class DataConfig:
    corpus: str = "python-docs"
    """Built-in corpus (`python-docs`, `python-code`), a local .txt/.jsonl file or folder,
    or a Hugging Face dataset name (`hf:<name>[:<split>]`, needs internet)."""
    tokens: int = 30_000
    """Distinct activation vectors harvested (after dropping special tokens)."""
    held_out: float = 0.1
    """Fraction of the harvested tokens (the last ones) kept out of training for evaluation."""
    cache: bool = True
    """Harvest into the on-disk activation cache once, then train from it (reused by later
    sweeps). false: stream activations from the model straight into training, nothing on
    disk (budgets beyond the disk; every epoch and the evaluation pass re-run the model)."""


@dataclass
class SAEConfig:
    n_features: int = 128
    """Dictionary size F."""
    k: int = 8
    """Active features per token (Top-K)."""


@dataclass
class TrainConfig:
    seed: int = 1
    """Seed of the SAE's initialisation (and of its data order when data_order is per_seed)."""
    epochs: int = 8
    """Passes over the training tokens."""
    batch_size: int = 256
    """Tokens per optimizer step."""
    lr: float = 0.0
    """Adam learning rate; 0 = auto: 2e-4 / sqrt(n_features / 16384) (Gao et al. 2024)."""
    warmup_fraction: float = 0.05
    """Fraction of steps over which the lr rises linearly from 0 (a fraction, not sparsify's
    1,000 steps, so that short runs warm up too)."""
    decay_fraction: float = 0.2
    """Final fraction of steps over which the lr decays linearly to 0 (Conerly et al. 2024)."""
    optimizer: str = "adam"
    """`adam` (torch.optim.Adam, betas 0.9/0.999) or `sgd`."""
    dtype: str = "float32"
    """Training dtype of the SAE parameters."""
    b_dec_init: str = "geometric_median"
    """Initial decoder bias: `geometric_median` of the training tokens (Bricken et al. 2023),
    `mean`, or `zeros`."""
    aux_k: int = 0
    """Latents in the AuxK loss on dead latents; 0 = auto: the power of two nearest
    d_model / 2 (Gao et al. 2024)."""
    aux_coef: float = 1 / 32
    """Weight of the AuxK loss (Gao et al. 2024); 0 turns AuxK off."""
    dead_window: int = 0
    """A latent is dead for AuxK when it has not fired in this many training tokens;
    0 = auto: 10M (Gao et al.) capped at one pass over the training tokens, so AuxK also acts
    in short runs."""
    data_order: str = "per_seed"
    """`per_seed`: each seed shuffles tokens with its own generator; `shared`: all seeds see
    the same order (separates init variance from data-order variance)."""
    data_seed: int = 0
    """Seed of the shared parts of the data order (window order; token order when shared)."""
    shuffle_buffer: int = 262_144
    """Tokens shuffled together (one window); larger budgets stream window by window."""
    checkpoint_every: int = 1_000_000
    """Training tokens between checkpoints (taken at window boundaries); 0 = never."""


@dataclass
class MatchConfig:
    threshold: float = 0.9
    """Cosine at or above which a matched pair counts as the same feature."""
    top_k: int = 20
    """How many of the best matches each pair report lists."""
    solver: str = "auto"
    """Assignment solver: `auto` (native certified sparse solver if built, else lapjv, else
    scipy), `native`, `lapjv`, `scipy`."""
    live_only: bool = False
    """Also report the matching restricted to each run's live (ever-firing) features."""


@dataclass
class RunConfig:
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    sae: SAEConfig = field(default_factory=SAEConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    match: MatchConfig = field(default_factory=MatchConfig)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


SECTIONS = {f.name: f.type for f in dataclasses.fields(RunConfig)}


def section_fields(section: str) -> dict[str, dataclasses.Field]:
    cls = {"model": ModelConfig, "data": DataConfig, "sae": SAEConfig,
           "train": TrainConfig, "match": MatchConfig}[section]
    return {f.name: f for f in dataclasses.fields(cls)}


def known_keys() -> list[str]:
    return [f"{s}.{k}" for s in SECTIONS for k in section_fields(s)]


def _coerce(key: str, value: Any, default: Any) -> Any:
    """Convert a YAML/CLI value to the type of the field's default, or explain why not."""
    if isinstance(default, bool):
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false", "1", "0", "yes", "no"):
            return value.lower() in ("true", "1", "yes")
        raise ConfigError(f"{key}: expected true/false, got {value!r}")
    if isinstance(default, int):
        if isinstance(value, bool):
            raise ConfigError(f"{key}: expected an integer, got {value!r}")
        if isinstance(value, int):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        if isinstance(value, str):  # "30000", "30_000", "3e4", "30k"
            text = value.replace("_", "").strip().lower()
            scale = {"k": 1_000, "m": 1_000_000, "b": 1_000_000_000}.get(text[-1:], 1)
            text = text[:-1] if scale > 1 else text
            try:
                number = float(text) * scale
            except ValueError:
                number = None
            if number is not None and number.is_integer():
                return int(number)
        raise ConfigError(f"{key}: expected an integer, got {value!r}")
    if isinstance(default, float):
        if key == "train.lr" and isinstance(value, str) and value.strip().lower() == "auto":
            return 0.0  # 0 means auto
        try:
            return float(value)
        except (TypeError, ValueError):
            raise ConfigError(f"{key}: expected a number, got {value!r}") from None
    if isinstance(default, str):
        if isinstance(value, (dict, list)):
            raise ConfigError(f"{key}: expected a string, got {value!r}")
        return str(value)
    return value


def apply_overrides(cfg: RunConfig, overrides: dict[str, Any]) -> RunConfig:
    """Return a copy of `cfg` with dotted keys (`train.seed`) set; unknown keys are errors."""
    out = RunConfig(**{s: dataclasses.replace(getattr(cfg, s)) for s in SECTIONS})
    for key, value in overrides.items():
        section, _, name = key.partition(".")
        if section not in SECTIONS or not name:
            raise ConfigError(f"unknown config key {key!r} (sections: {', '.join(SECTIONS)})")
        fields = section_fields(section)
        if name not in fields:
            raise ConfigError(
                f"unknown config key {key!r} (known in {section}: {', '.join(fields)})")
        sec = getattr(out, section)
        setattr(sec, name, _coerce(key, value, getattr(sec, name)))
    validate(out)
    return out


def flatten(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """{'train': {'seed': 1}} -> {'train.seed': 1}; a section given as a non-dict is an error."""
    if not isinstance(d, dict):
        raise ConfigError(f"expected a mapping of config sections, got {d!r}")
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if not prefix and k not in SECTIONS:
            raise ConfigError(f"unknown config section {k!r} (sections: {', '.join(SECTIONS)})")
        if isinstance(v, dict):
            out.update(flatten(v, key + "."))
        elif not prefix:
            raise ConfigError(f"config section {k!r} must be a mapping, got {v!r}")
        else:
            out[key] = v
    return out


def from_dict(d: dict[str, Any]) -> RunConfig:
    """Build a RunConfig from nested sections (as in run.json or a YAML `base:`)."""
    return apply_overrides(RunConfig(), flatten(d))


def validate(cfg: RunConfig) -> None:
    """Reject values no run can use, with a message naming the key."""
    if cfg.sae.n_features < 1:
        raise ConfigError(f"sae.n_features must be >= 1, got {cfg.sae.n_features}")
    if not 1 <= cfg.sae.k <= cfg.sae.n_features:
        raise ConfigError(
            f"sae.k must be between 1 and sae.n_features={cfg.sae.n_features}, got {cfg.sae.k}")
    if cfg.data.tokens < 2:
        raise ConfigError(f"data.tokens must be >= 2, got {cfg.data.tokens}")
    if not 0.0 <= cfg.data.held_out < 1.0:
        raise ConfigError(f"data.held_out must be in [0, 1), got {cfg.data.held_out}")
    if cfg.train.epochs < 1:
        raise ConfigError(f"train.epochs must be >= 1, got {cfg.train.epochs}")
    if cfg.train.batch_size < 1:
        raise ConfigError(f"train.batch_size must be >= 1, got {cfg.train.batch_size}")
    if not cfg.train.lr >= 0:
        raise ConfigError(f"train.lr must be > 0 (or 0 for auto), got {cfg.train.lr}")
    for name in ("warmup_fraction", "decay_fraction"):
        value = getattr(cfg.train, name)
        if not 0.0 <= value <= 1.0:
            raise ConfigError(f"train.{name} must be in [0, 1], got {value}")
    if cfg.train.warmup_fraction + cfg.train.decay_fraction > 1.0:
        raise ConfigError("train.warmup_fraction + train.decay_fraction must be <= 1")
    if cfg.train.b_dec_init not in ("geometric_median", "mean", "zeros"):
        raise ConfigError(
            f"train.b_dec_init must be geometric_median, mean or zeros, got {cfg.train.b_dec_init!r}")
    if cfg.train.data_order not in ("per_seed", "shared"):
        raise ConfigError(f"train.data_order must be per_seed or shared, got {cfg.train.data_order!r}")
    for name in ("aux_k", "dead_window", "checkpoint_every"):
        if getattr(cfg.train, name) < 0:
            raise ConfigError(f"train.{name} must be >= 0, got {getattr(cfg.train, name)}")
    if cfg.train.aux_coef < 0:
        raise ConfigError(f"train.aux_coef must be >= 0, got {cfg.train.aux_coef}")
    if cfg.train.shuffle_buffer < 1:
        raise ConfigError(f"train.shuffle_buffer must be >= 1, got {cfg.train.shuffle_buffer}")
    if cfg.train.optimizer not in ("adam", "sgd"):
        raise ConfigError(f"train.optimizer must be 'adam' or 'sgd', got {cfg.train.optimizer!r}")
    if cfg.train.dtype not in ("float32", "float64", "bfloat16"):
        raise ConfigError(f"train.dtype must be float32, float64 or bfloat16, got {cfg.train.dtype!r}")
    if cfg.model.context_length < 2:
        raise ConfigError(f"model.context_length must be >= 2, got {cfg.model.context_length}")
    if cfg.match.solver not in ("auto", "lapjv", "scipy", "native"):
        raise ConfigError(
            f"match.solver must be auto, native, lapjv or scipy, got {cfg.match.solver!r}")
    if not -1.0 <= cfg.match.threshold <= 1.0:
        raise ConfigError(f"match.threshold must be in [-1, 1], got {cfg.match.threshold}")
