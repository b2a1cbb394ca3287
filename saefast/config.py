"""Dataclass configs: one section per stage, YAML keys are the field names.

A run is fully described by a `RunConfig`; everything that changes its result lives here
and is written to the run's `run.json`. Defaults are chosen for the offline default model
(all-MiniLM-L6-v2, d=384) on a laptop; `experiments/seed_repro.yaml` spells out every value
the original study used so that changing a default never changes the study.

Each field carries what the rest of saefast needs to know about it, in one place:
- a `Literal[...]` type lists its choices: validation, the CLI's `choices=` and the error
  message all read them (`choices(key)`);
- `setting(default, label=...)` says how a run name shows the field when an experiment
  varies it (`e10` for train.epochs=10), `CORE` that every run name shows it, and
  `in_name=False` that it never changes the trained weights (device, checkpoint interval),
  so it is never in a name nor compared when a sweep resumes.
Pure Python: importing this module does not import torch.
"""

from __future__ import annotations

import dataclasses
import functools
import re
import typing
from dataclasses import dataclass, field
from typing import Any, Literal

from saefast.errors import ConfigError

__all__ = ["ConfigError", "ModelConfig", "DataConfig", "SAEConfig", "TrainConfig", "MatchConfig",
           "RunConfig", "apply_overrides", "flatten", "from_dict", "known_keys", "choices",
           "name_label", "affects_results", "SECTIONS", "NullsConfig", "nulls_from_dict"]

CORE = "core"  # label of the fields every run name shows (hook, F, k, tokens, seed)

Optimizer = Literal["adam", "sgd"]
TrainDtype = Literal["float32", "float64", "bfloat16"]
Matmul = Literal["float32", "tf32", "bfloat16"]
BDecInit = Literal["geometric_median", "mean", "zeros"]
DataOrder = Literal["per_seed", "shared"]
Solver = Literal["auto", "native", "lapjv", "scipy"]
TrainedNullKind = Literal["gaussian", "elliptical", "both"]


def setting(default: Any, label: str = "", *, in_name: bool = True) -> Any:
    """A config field with its run-name label (see the module docstring)."""
    return field(default=default, metadata={"label": label, "in_name": in_name})


@dataclass
class ModelConfig:
    name: str = setting("minilm")
    """Built-in model (`minilm`, `gemma-270m`), a Hugging Face name, or a local directory."""
    hook: str = setting("blocks.0.hook_resid_pre", CORE)
    """TransformerLens hook point whose activations the SAE is trained on."""
    context_length: int = setting(128, "ctx")
    """Tokens per forward pass; longer documents are cut into chunks of this length."""
    device: str = setting("cpu", in_name=False)
    """Torch device for the model forward pass and training (`cpu`, `cuda`, `cuda:1`)."""
    drop_special_tokens: bool = setting(True, "special")
    """Drop BOS/CLS/SEP/PAD positions: their activations are huge outliers that would
    dominate a small SAE's reconstruction loss and are not features of the text."""


@dataclass
class DataConfig:
    corpus: str = setting("python-docs")
    """Built-in corpus (`python-docs`, `python-code`, `math`, `multilingual`), a local
    .txt/.jsonl file or folder,
    or a Hugging Face dataset name (`hf:<name>[:<split>]`, needs internet)."""
    tokens: int = setting(30_000, CORE)
    """Distinct activation vectors harvested (after dropping special tokens)."""
    held_out: float = setting(0.1, "ho")
    """Fraction of the harvested tokens (the last ones) kept out of training for evaluation."""
    held_out_tokens: int = setting(0, "hot")
    """0: the held-out set is the last `held_out` fraction of each budget. N > 0: the first N
    activations of the store are one held-out set shared by every budget (never trained on),
    and training uses the `tokens` activations after them (`held_out` is then not used), so
    budgets are evaluated on the same tokens. Needs the activation cache."""
    cache: bool = setting(True, "cache")
    """Harvest into the on-disk activation cache once, then train from it (reused by later
    sweeps). false: stream activations from the model straight into training, nothing on
    disk (budgets beyond the disk; every epoch and the evaluation pass re-run the model)."""


@dataclass
class SAEConfig:
    n_features: int = setting(128, CORE)
    """Dictionary size F."""
    k: int = setting(8, CORE)
    """Active features per token (Top-K)."""


@dataclass
class TrainConfig:
    seed: int = setting(1, CORE)
    """Seed of the SAE's initialisation (and of its data order when data_order is per_seed)."""
    epochs: int = setting(8, "e")
    """Passes over the training tokens."""
    steps: int = setting(0, "st")
    """0: train for `epochs` passes. N > 0: exactly N optimizer steps whatever the budget
    (step-matched controls across budgets): the data is cycled through as many passes as
    needed, the last one cut short (`epochs` is then not used); with N x batch_size <= the
    training tokens no token is seen twice (single-epoch training)."""
    batch_size: int = setting(256, "b")
    """Tokens per optimizer step."""
    lr: float = setting(0.0, "lr")
    """Adam learning rate; 0 = auto: 2e-4 / sqrt(n_features / 16384) (Gao et al. 2024)."""
    warmup_fraction: float = setting(0.05, "wu")
    """Fraction of steps over which the lr rises linearly from 0 (a fraction, not sparsify's
    1,000 steps, so that short runs warm up too)."""
    decay_fraction: float = setting(0.2, "dc")
    """Final fraction of steps over which the lr decays linearly to 0 (Conerly et al. 2024)."""
    optimizer: Optimizer = setting("adam")
    """`adam` (torch.optim.Adam, betas 0.9/0.999) or `sgd`."""
    dtype: TrainDtype = setting("float32")
    """Training dtype of the SAE parameters."""
    matmul: Matmul = setting("float32", "mm")
    """Precision of the encoder GEMM: `float32` (strict), `tf32` (CUDA tensor cores, 10-bit
    mantissa; no effect on the CPU), `bfloat16` (its inputs rounded to bfloat16, float32
    accumulation; parameters, Adam's state and the decoder stay float32, the master copy).
    No float16: its narrow range would need loss scaling (the ops themselves take float16)."""
    b_dec_init: BDecInit = setting("geometric_median", "bdec")
    """Initial decoder bias: `geometric_median` of the training tokens (Bricken et al. 2023),
    `mean`, or `zeros`."""
    aux_k: int = setting(0, "auxk")
    """Latents in the AuxK loss on dead latents; 0 = auto: the power of two nearest
    d_model / 2 (Gao et al. 2024)."""
    aux_coef: float = setting(1 / 32, "aux")
    """Weight of the AuxK loss (Gao et al. 2024); 0 turns AuxK off."""
    dead_window: int = setting(0, "dw")
    """A latent is dead for AuxK when it has not fired in this many training tokens;
    0 = auto: 10M (Gao et al.) capped at one pass over the training tokens, so AuxK also acts
    in short runs."""
    data_order: DataOrder = setting("per_seed")
    """`per_seed`: each seed shuffles tokens with its own generator; `shared`: all seeds see
    the same order (separates init variance from data-order variance)."""
    data_seed: int = setting(0, "ds")
    """Seed of the shared parts of the data order (window order; token order when shared)."""
    shuffle_buffer: int = setting(262_144, "buf")
    """Tokens shuffled together (one window); larger budgets stream window by window."""
    checkpoint_every: int = setting(1_000_000, in_name=False)
    """Training tokens between checkpoints (taken at window boundaries); 0 = never."""


@dataclass
class MatchConfig:
    threshold: float = setting(0.9, in_name=False)
    """Cosine at or above which a matched pair counts as the same feature."""
    top_k: int = setting(20, in_name=False)
    """How many of the best matches each pair report lists."""
    solver: Solver = setting("auto", in_name=False)
    """Assignment solver: `auto` (native certified sparse solver if built, else lapjv, else
    scipy), `native`, `lapjv`, `scipy`. The matching never changes training: no match key is
    in a run name."""
    live_only: bool = setting(False, in_name=False)
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


@dataclass(frozen=True)
class NullsConfig:
    """An experiment's trained null (the YAML's top-level `nulls:`, `--no-trained-null`). Not
    a section of RunConfig: it never changes a run, so it is in no run.json and no run name;
    it decides which extra runs a sweep trains and what its reports compare with."""

    trained: bool = True
    """Train each seed group's recipe on surrogate activations with the data's mean and
    covariance and no sparse structure (`saefast.sweep.null_runs`), and compare the real
    pairs with those null pairs, pair by pair (summary.nulls.kinds.trained)."""
    trained_kind: TrainedNullKind = "gaussian"
    """The surrogate (`saefast.data.surrogate`): `gaussian`, `elliptical` (each real token's
    Mahalanobis norm kept, its direction drawn at random), or `both`."""

    def kinds(self) -> tuple[str, ...]:
        """The surrogate kinds trained: none when off."""
        if not self.trained:
            return ()
        return ("gaussian", "elliptical") if self.trained_kind == "both" else (self.trained_kind,)


def nulls_from_dict(d: Any) -> NullsConfig:
    """The YAML's `nulls:` mapping ({trained: false}) as a NullsConfig; unknown keys and bad
    values are ConfigErrors naming `nulls.<key>`."""
    if d is None:
        return NullsConfig()
    if not isinstance(d, dict):
        raise ConfigError(f"nulls must be a mapping like {{trained: false}}, got {d!r}")
    out, fields = {}, {f.name for f in dataclasses.fields(NullsConfig)}
    for key, value in d.items():
        if key not in fields:
            raise ConfigError(f"unknown key nulls.{key} (known: {', '.join(sorted(fields))})")
        if key == "trained":
            value = _coerce_bool(f"nulls.{key}", value)
        else:
            allowed = typing.get_args(TrainedNullKind)
            if value not in allowed:
                raise ConfigError(f"nulls.{key} must be one of {', '.join(allowed)}; got {value!r}")
        out[key] = value
    return NullsConfig(**out)


SECTION_CLASSES = {"model": ModelConfig, "data": DataConfig, "sae": SAEConfig,
                   "train": TrainConfig, "match": MatchConfig}
SECTIONS = tuple(SECTION_CLASSES)


def section_fields(section: str) -> dict[str, dataclasses.Field]:
    return {f.name: f for f in dataclasses.fields(SECTION_CLASSES[section])}


def known_keys() -> list[str]:
    return [f"{s}.{k}" for s in SECTIONS for k in section_fields(s)]


def _field(key: str) -> dataclasses.Field:
    """The field of a dotted key; an unknown key is a ConfigError that lists the known ones."""
    if not isinstance(key, str):
        raise ConfigError(f"config keys are names like train.seed, got {key!r}")
    section, _, name = key.partition(".")
    if section not in SECTIONS or not name:
        raise ConfigError(f"unknown config key {key!r} (sections: {', '.join(SECTIONS)})")
    fields = section_fields(section)
    if name not in fields:
        raise ConfigError(f"unknown config key {key!r} (known in {section}: {', '.join(fields)})")
    return fields[name]


@functools.cache
def _hints(section: str) -> dict[str, Any]:
    return typing.get_type_hints(SECTION_CLASSES[section])


def choices(key: str) -> tuple[str, ...] | None:
    """The allowed values of a `Literal[...]` field (`train.optimizer` -> ('adam', 'sgd')),
    None for a free field."""
    section, name = key.partition(".")[0], _field(key).name
    hint = _hints(section)[name]
    return typing.get_args(hint) if typing.get_origin(hint) is Literal else None


def name_label(key: str) -> str | None:
    """How a run name labels `key` when an experiment varies it: a prefix ('e' for
    train.epochs; '' for the bare value), CORE for keys every name shows, None for keys that
    never change the weights and so are never in a name."""
    meta = _field(key).metadata
    return meta.get("label", "") if meta.get("in_name", True) else None


def affects_results(key: str) -> bool:
    """Whether two runs that differ in `key` can have different weights."""
    return name_label(key) is not None


_DEVICE = re.compile(r"cpu|cuda(:\d+)?")


def _coerce(key: str, value: Any, default: Any) -> Any:
    """Convert a YAML/CLI value to the type of the field's default, or explain why not."""
    allowed = choices(key)
    if allowed is not None:
        if value not in allowed:
            raise ConfigError(f"{key} must be one of {', '.join(allowed)}; got {value!r}")
        return value
    if isinstance(default, bool):
        return _coerce_bool(key, value)
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


def _coerce_bool(key: str, value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in ("true", "false", "1", "0", "yes", "no"):
        return value.lower() in ("true", "1", "yes")
    raise ConfigError(f"{key}: expected true/false, got {value!r}")


def apply_overrides(cfg: RunConfig, overrides: dict[str, Any]) -> RunConfig:
    """Return a copy of `cfg` with dotted keys (`train.seed`) set; unknown keys are errors."""
    out = RunConfig(**{s: dataclasses.replace(getattr(cfg, s)) for s in SECTIONS})
    for key, value in overrides.items():
        name = _field(key).name
        sec = getattr(out, key.partition(".")[0])
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
    if cfg.train.steps < 0:
        raise ConfigError(f"train.steps must be >= 0 (0 = use train.epochs), got {cfg.train.steps}")
    if cfg.data.held_out_tokens < 0:
        raise ConfigError(f"data.held_out_tokens must be >= 0, got {cfg.data.held_out_tokens}")
    if cfg.data.held_out_tokens and not cfg.data.cache:
        raise ConfigError("data.held_out_tokens needs the activation cache (data.cache: true): "
                          "a stream cannot set its first tokens aside for every budget")
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
    for name in ("aux_k", "dead_window", "checkpoint_every"):
        if getattr(cfg.train, name) < 0:
            raise ConfigError(f"train.{name} must be >= 0, got {getattr(cfg.train, name)}")
    if cfg.train.aux_coef < 0:
        raise ConfigError(f"train.aux_coef must be >= 0, got {cfg.train.aux_coef}")
    if cfg.train.shuffle_buffer < 1:
        raise ConfigError(f"train.shuffle_buffer must be >= 1, got {cfg.train.shuffle_buffer}")
    for key in known_keys():  # Literal fields set directly on a dataclass, not via overrides
        allowed, section, name = choices(key), *key.split(".")
        if allowed is not None and getattr(getattr(cfg, section), name) not in allowed:
            raise ConfigError(f"{key} must be one of {', '.join(allowed)}; "
                              f"got {getattr(getattr(cfg, section), name)!r}")
    if not _DEVICE.fullmatch(cfg.model.device):
        raise ConfigError(f"model.device must be cpu, cuda or cuda:N, got {cfg.model.device!r}")
    if cfg.model.context_length < 2:
        raise ConfigError(f"model.context_length must be >= 2, got {cfg.model.context_length}")
    if not -1.0 <= cfg.match.threshold <= 1.0:
        raise ConfigError(f"match.threshold must be in [-1, 1], got {cfg.match.threshold}")
