"""The checks a sweep makes before any work, and that --dry-run makes (sweep/plan.preflight,
data/names.py, data/corpus_size.py): a misspelt model, hook or corpus, or more tokens than a
built-in corpus holds, is one error line naming the fix, exit 2, nothing created, no model
loaded; and a harvest that fails before its first shard leaves no store folder behind."""

import subprocess
import sys

import pytest

from saefast.cli.main import main
from saefast.data import corpus_size, names
from saefast.errors import CorpusError, HookError, ModelError

pytestmark = pytest.mark.usefixtures("cache")


def _dry_run(tmp_path, capsys, *flags):
    """(exit code, stderr lines) of a dry run; asserts it created nothing."""
    rc = main(["sweep", *flags, "--seeds", "2", "--out", str(tmp_path / "out"),
               "--cache-dir", str(tmp_path / "c"), "--dry-run"])
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert not (tmp_path / "out").exists() and not (tmp_path / "c").exists()
    return rc, err


@pytest.mark.parametrize("flags, says", [
    (["--model", "minlm"], "unknown model 'minlm' (did you mean 'minilm'?)"),
    (["--model", "tiny", "--hook", "blocks.1.hook_resid_per"], "close: blocks.1.hook_resid_pre"),
    (["--hook", "blocks.99.hook_resid_pre"], "for model 'minilm' (it has blocks 0-5; close: "),
    (["--corpus", "pyhton-docs"], "unknown corpus 'pyhton-docs' (did you mean 'python-docs'?)"),
    (["--corpus", "roneneldan/TinyStories"], "use 'hf:roneneldan/TinyStories'"),
    (["--tokens", "10000000"], "corpus 'python-docs' holds ~128K tokens for model 'minilm' (an estimate"),
])
def test_a_typo_or_a_budget_too_big_is_one_line_and_exit_2(tmp_path, capsys, flags, says):
    rc, err = _dry_run(tmp_path, capsys, *flags)
    assert rc == 2 and len(err) == 1 and err[0].startswith("error:"), err
    assert says in err[0]


def test_a_budget_near_the_corpus_size_warns_and_plans(tmp_path, capsys):
    rc, err = _dry_run(tmp_path, capsys, "--tokens", "120000")  # python-docs: ~128K MiniLM tokens
    assert rc == 0
    assert [line for line in err if "may be more than it has" in line]


def test_names_that_can_load_pass_without_the_network(tmp_path, corpus, monkeypatch):
    import socket

    def no_network(*args, **kwargs):
        raise AssertionError("a check must not use the network")

    monkeypatch.setattr(socket, "create_connection", no_network)
    monkeypatch.setattr(socket.socket, "connect", no_network)
    for model in ("minilm", "tiny", "gemma-270m", "gpt2", "EleutherAI/pythia-70m", str(tmp_path)):
        names.check_model(model)
    for corpus_name in ("python-docs", "math", str(corpus), str(corpus.parent), "hf:NeelNanda/pile-10k"):
        names.check_corpus(corpus_name)
    names.check_hooks("gemma-270m", ["blocks.17.ln2_post.hook_normalized", "hook_embed"])
    names.check_hooks("EleutherAI/pythia-70m", ["anything: checked once it loads"])
    with pytest.raises(ModelError, match="not a Hugging Face name"):
        names.check_model("no such model")
    with pytest.raises(HookError, match="it has blocks 0-17"):
        names.check_hooks("gemma-270m", ["blocks.18.hook_resid_pre"])
    (tmp_path / "x.csv").write_text("a,b")
    with pytest.raises(CorpusError, match="unsupported file type"):
        names.check_corpus(str(tmp_path / "x.csv"))


def test_a_real_sweep_with_a_typo_fails_before_torch_loads(tmp_path):
    """Not after the imports and the model load: the checks need neither."""
    code = ("import sys; from saefast.cli.main import main; "
            f"rc = main(['sweep', '--model', 'minlm', '--out', {str(tmp_path / 'o')!r}]); "
            "print(rc, 'torch' in sys.modules, 'transformer_lens' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=60, check=False)
    assert out.stdout.split()[-3:] == ["2", "False", "False"], out.stdout + out.stderr
    assert "did you mean 'minilm'" in out.stderr and not (tmp_path / "o").exists()


def test_the_builtin_hook_table_is_what_the_model_names(monkeypatch):
    """And transformers' progress bars are off while saefast loads a model, on again after."""
    from transformers.utils import logging as hf_logging

    from saefast.data import models

    bars, boot = [], models._boot
    monkeypatch.setattr(models, "_boot",
                        lambda *a: bars.append(hf_logging.is_progress_bar_enabled()) or boot(*a))
    _, info = models.load_model("tiny")
    assert names.builtin_hook_names("tiny") == info["hook_names"]
    assert names.BUILTIN_HOOKS["tiny"][0] == info["n_layers"]
    assert bars == [False] and hf_logging.is_progress_bar_enabled()


def test_the_size_estimate_is_close_for_the_byte_tokenizer():
    """tiny's tokens are the UTF-8 bytes, so its estimate can be checked exactly; the
    generated math corpus's stored character count is that of its text."""
    from saefast.data import corpora, math_text

    for name in ("python-docs", "math"):
        exact = sum(len(d.encode()) for d in corpora.iter_documents(name))
        estimate, how = corpus_size.capacity("tiny", name)
        assert abs(estimate - exact) / exact < 0.01, (name, estimate, exact, how)
    assert corpus_size.MATH_CHARS[math_text.VERSION] == \
        sum(len(d) for d in math_text.iter_math_documents())
    assert corpus_size.capacity("tiny", "some/file.txt") is None
    # another model: the one-token-per-byte bound, so only a certainly too big budget is refused
    assert corpus_size.check_budget("gpt2", "python-docs", 400_000) is None
    with pytest.raises(CorpusError, match=r"at most \d+K tokens .*one token per UTF-8 byte"):
        corpus_size.check_budget("gpt2", "python-docs", 500_000)


def test_a_failed_harvest_leaves_no_store_folder_but_keeps_one_with_data(corpus, cache):
    from saefast.data.harvest import harvest

    good, bad = "blocks.0.hook_resid_pre", "blocks.7.hook_resid_pre"
    activations = cache / "activations"
    with pytest.raises(HookError, match="for model 'tiny' .*blocks 0-1"):
        harvest("tiny", [bad], str(corpus), 300)
    assert list(activations.iterdir()) == []
    (kept,) = harvest("tiny", [good], str(corpus), 300).values()
    with pytest.raises(HookError):
        harvest("tiny", [good, bad], str(corpus), 600)  # the good store existed: it stays
    assert list(activations.iterdir()) == [kept] and (kept / "meta.json").exists()
