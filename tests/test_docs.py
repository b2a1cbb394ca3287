"""The README's commands are the ones CI runs, and its examples name things that exist."""

import re
from pathlib import Path

ROOT = Path(__file__).parents[1]


def readme_commands():
    return re.findall(r"```bash\n(.+?)\n```", (ROOT / "README.md").read_text())


def test_ci_runs_the_readme_test_command():
    test_cmd = [c for c in readme_commands() if "pytest" in c]
    assert len(test_cmd) == 1
    assert test_cmd[0] in (ROOT / ".ci" / "run").read_text()


def test_readme_study_command_uses_the_shipped_experiment():
    study = [c for c in readme_commands() if "saefast sweep" in c]
    assert study and "experiments/seed_repro.yaml" in study[0]
    assert (ROOT / "experiments" / "seed_repro.yaml").is_file()


def test_readme_python_api_names_exist():
    import saefast

    text = (ROOT / "README.md").read_text()
    for name in set(re.findall(r"saefast\.([a-z_]+)\(", text)):
        assert hasattr(saefast, name), name
    for name in set(re.findall(r"saefast\.ops\.([a-z_]+)\(", text)):
        assert hasattr(saefast.ops, name), name


def _python_block(after: str) -> str:
    text = (ROOT / "README.md").read_text()
    return re.search(r"```python\n(.+?)\n```", text[text.index(after):], re.S).group(1)


def test_readme_python_api_example_runs(tmp_path, monkeypatch):
    """The README's Python API example, run as written against run dirs named like the ones
    the quick start writes (random weights: the example's calls, not its numbers, are checked)."""
    import torch

    from saefast.runs import artifacts

    gen = torch.Generator().manual_seed(0)
    for seed in range(1, 6):
        W = torch.randn(128, 384, generator=gen)  # [F, d]
        name = f"L3-f128-k8-t30000-e8-s{seed}"
        artifacts.write_run_dir(
            tmp_path / "saefast-out" / "runs" / name, W_enc=W, b_enc=torch.zeros(128), W_dec=W,
            b_dec=torch.zeros(384), k=8,
            features=[{"feature_index": i, "dead": i % 7 == 0} for i in range(128)],
            run_info={"name": name})
    monkeypatch.chdir(tmp_path)
    scope: dict = {}
    exec(compile(_python_block("## Python API"), "README.md", "exec"), scope)
    assert len(scope["run_dirs"]) == 5
    assert (tmp_path / "saefast-out" / "analysis" / "stability.json").is_file()
    assert scope["x_hat"].shape == (16, 384) and scope["row_v"].shape == (128, 4)


def _architecture() -> str:
    return (ROOT / "docs" / "ARCHITECTURE.md").read_text()


def test_architecture_names_only_files_that_exist():
    """Every path docs/ARCHITECTURE.md names (`saefast/...`, `cli/...`, `csrc/...`, `tests/...`,
    or a module under saefast/ such as `stats/evidence.py`) is there: the map cannot keep a
    module that moved."""
    missing = []
    for path in set(re.findall(r"`((?:[a-z_]+/)+[a-z_]*(?:\.(?:py|h|cpp|cu|cuh|inc))?)`", _architecture())):
        candidates = [ROOT / path, ROOT / "saefast" / path]
        if not any(c.exists() for c in candidates):
            missing.append(path)
    assert not missing, f"ARCHITECTURE.md names what does not exist: {sorted(missing)}"


def test_architecture_says_where_to_change_things():
    """At least 8 everyday changes, each sending the reader to one folder that exists."""
    text = _architecture()
    table = text[text.index("## Where to change it"):].split("\n## ")[0]
    rows = [r for r in table.splitlines() if r.startswith("| ") and not r.startswith("| to change")]
    assert len(rows) >= 8
    for row in rows:
        folder = row.split("|")[2].strip().strip("`")
        assert (ROOT / folder).is_dir(), row
