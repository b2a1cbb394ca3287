"""Run configs (saefast.config): overrides coerce their types, unknown keys and bad values are
one clear error naming the key, configs round-trip through dicts, every field is documented."""

import pytest

from saefast.config import (
    ConfigError,
    RunConfig,
    apply_overrides,
    flatten,
    from_dict,
    known_keys,
)


def test_overrides_coerce_types_and_keep_the_original():
    base = RunConfig()
    cfg = apply_overrides(base, {"train.seed": "3", "data.tokens": "30k", "train.lr": "3e-4",
                                 "match.live_only": "true"})
    assert (cfg.train.seed, cfg.data.tokens, cfg.train.lr, cfg.match.live_only) == (3, 30_000, 3e-4, True)
    assert base.train.seed == 1 and base.data.tokens == 30_000 and not base.match.live_only


@pytest.mark.parametrize("key", ["train.sed", "nope.seed", "train"])
def test_unknown_key_is_named(key):
    with pytest.raises(ConfigError, match="unknown config key"):
        apply_overrides(RunConfig(), {key: 1})


def test_unknown_key_lists_the_known_ones():
    with pytest.raises(ConfigError, match="seed"):
        apply_overrides(RunConfig(), {"train.sed": 1})


@pytest.mark.parametrize("overrides, message", [
    ({"sae.k": 200}, "sae.k must be between 1 and sae.n_features=128"),
    ({"sae.n_features": 0}, "n_features"),
    ({"data.held_out": 1.0}, "held_out"),
    ({"train.optimizer": "lion"}, "optimizer"),
    ({"train.seed": "abc"}, "expected an integer"),
    ({"train.epochs": 1.5}, "expected an integer"),
])
def test_invalid_values(overrides, message):
    with pytest.raises(ConfigError, match=message):
        apply_overrides(RunConfig(), overrides)


def test_round_trip_through_dict():
    cfg = apply_overrides(RunConfig(), {"sae.n_features": 512, "sae.k": 32, "model.hook": "blocks.3.hook_resid_pre"})
    assert from_dict(cfg.to_dict()) == cfg


def test_flatten_rejects_unknown_sections():
    with pytest.raises(ConfigError, match="unknown config section 'modle'"):
        flatten({"modle": {"name": "x"}})
    assert flatten({"train": {"seed": 2}}) == {"train.seed": 2}


def test_every_field_has_a_docstring():
    # the CLI and docs rely on one-line docstrings right under each field
    import inspect

    import saefast.config as c

    source = inspect.getsource(c)
    for key in known_keys():
        field = key.split(".")[1]
        after = source.split(f"    {field}:", 1)[1].splitlines()[1].strip()
        assert after.startswith('"""'), key
