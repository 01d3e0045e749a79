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
