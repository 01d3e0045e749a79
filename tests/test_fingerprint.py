from __future__ import annotations

from pathlib import Path

from mlflow_ci.config.loader import parse_config
from mlflow_ci.fingerprint import fingerprint, matched_files


def test_globs_match_files_recursively_and_skip_tool_folders(tmp_path: Path):
    for name in ("train.py", "data/a.csv", "data/deep/b.csv", ".git/config", "data/.mlflow-ci/x", "src/__pycache__/m.pyc", "src/m.py"):
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(name)
    found = [p.as_posix() for p in matched_files(tmp_path, ["data/**", "**/*.py", "*.py"])]
    assert found == ["data/a.csv", "data/deep/b.csv", "src/m.py", "train.py"]
    assert [p.as_posix() for p in matched_files(tmp_path, ["data/**/"])] == ["data/a.csv", "data/deep/b.csv"]
    assert matched_files(tmp_path, ["**/*.py"], exclude=[tmp_path / "train.py"]) == [Path("src/m.py")]


def test_fingerprint_depends_on_content_names_and_config(tmp_path: Path):
    (tmp_path / "a.py").write_text("1")
    cfg = parse_config('experiment: e\ntrain: {command: x, inputs: ["*.py"]}\n', tmp_path / "mlflow-ci.yml")
    first = fingerprint(cfg)
    assert first == fingerprint(cfg) and first.startswith("sha256:")
    assert fingerprint(cfg, candidate="rf") != first
    (tmp_path / "a.py").write_text("2")
    assert fingerprint(cfg) != first
    other = parse_config('experiment: e2\ntrain: {command: x, inputs: ["*.py"]}\n', tmp_path / "mlflow-ci.yml")
    assert fingerprint(other) != fingerprint(cfg)


def _repo(tmp_path: Path) -> Path:
    from conftest import git

    for name, text in {"train.py": "t", "data.csv": "1,2\n", "README.md": "r", "docs/guide.md": "g",
                       ".github/workflows/ci.yml": "w", "src/model.py": "m", "mlflow-ci.yml": "x"}.items():
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    (tmp_path / ".gitignore").write_text("big/\n*.db\n")
    (tmp_path / "big").mkdir()
    (tmp_path / "big" / "raw.parquet").write_text("raw")
    (tmp_path / "mlflow.db").write_text("store")
    git(tmp_path, "init", "-q", "-b", "main")
    git(tmp_path, "add", "-A")
    git(tmp_path, "commit", "-q", "-m", "init")
    return tmp_path


def test_auto_inputs_are_what_git_knows_minus_documentation(tmp_path: Path):
    from mlflow_ci.fingerprint import input_files

    root = _repo(tmp_path)
    cfg = parse_config("experiment: e\ntrain: {command: x}\n", root / "mlflow-ci.yml")
    (root / "new_helper.py").write_text("untracked, not ignored: it may change the training")
    names = [p.as_posix() for p in input_files(cfg)]
    assert names == ["data.csv", "mlflow-ci.yml", "new_helper.py", "src/model.py", "train.py"]
    with_data = parse_config("experiment: e\ntrain: {command: x, data: ['big/**']}\n", root / "mlflow-ci.yml")
    assert "big/raw.parquet" in [p.as_posix() for p in input_files(with_data)]  # ignored by git, read by the training
    custom = parse_config("experiment: e\ntrain: {command: x, ignore: ['src/**']}\n", root / "mlflow-ci.yml")
    assert [p.as_posix() for p in input_files(custom)] == [  # ignore: replaces the default list
        ".github/workflows/ci.yml", ".gitignore", "README.md", "data.csv", "docs/guide.md", "mlflow-ci.yml", "new_helper.py", "train.py"]


def test_auto_inputs_see_a_root_level_data_change_and_not_a_readme_change(tmp_path: Path):
    root = _repo(tmp_path)
    cfg = parse_config("experiment: e\ntrain: {command: x}\n", root / "mlflow-ci.yml")
    before = fingerprint(cfg)
    (root / "README.md").write_text("better docs")
    (root / "docs" / "guide.md").write_text("more")
    assert fingerprint(cfg) == before
    (root / "data.csv").write_text("1,2\n3,4\n")
    assert fingerprint(cfg) != before


def test_auto_inputs_outside_git_walk_the_folder(tmp_path: Path):
    from mlflow_ci.fingerprint import input_files

    for name in ("train.py", "data.csv", "README.md", ".mlflow-ci/result.json"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(name)
    cfg = parse_config("experiment: e\ntrain: {command: x}\n", tmp_path / "mlflow-ci.yml")
    assert [p.as_posix() for p in input_files(cfg)] == ["data.csv", "train.py"]


def test_the_configuration_counts_by_what_trains_not_by_the_gate(tmp_path: Path):
    """Issue #27, item 6: editing gate thresholds, evaluation, report or publish settings reuses the run; the
    training's command, environment values, data and code still retrain."""
    root = _repo(tmp_path)

    def at(text: str) -> str:
        (root / "mlflow-ci.yml").write_text(text)
        return fingerprint(parse_config(text, root / "mlflow-ci.yml"))

    base = "experiment: e\ntrain: {command: python train.py, env: {LR: '0.1'}, timeout: 60}\ngate:\n  accuracy: {min: 0.8}\n"
    first = at(base)
    assert at(base.replace("min: 0.8", "min: 0.9, max_drop: 0.01")) == first  # a stricter gate
    assert at(base + "report: {precision: 6, title: Churn}\npublish: {comment: on-failure}\n") == first
    assert at(base.replace("timeout: 60", "timeout: 600")) == first  # how long it may take trains nothing
    assert at(base.replace("'0.1'", "'0.2'")) != first  # an environment value the training reads
    assert at(base.replace("python train.py", "python train.py --epochs 3")) != first
    at(base)
    (root / "src" / "model.py").write_text("changed")
    assert at(base) != first
