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
