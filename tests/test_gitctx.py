"""Git facts mlflow-ci keys things by: the id of a folder's tree, at a commit or in the checkout."""

from __future__ import annotations

from pathlib import Path

from conftest import git

from mlflow_ci.gitctx import tree_id


def test_a_folders_tree_id_is_its_content_and_a_dirty_checkout_has_none(tmp_path):
    root = tmp_path / "repo"
    (root / "app").mkdir(parents=True)
    (root / "app" / "bot.py").write_text("x = 1\n")
    (root / "README.md").write_text("hi\n")
    git(root, "init", "-q", "-b", "main")
    git(root, "add", "-A")
    git(root, "commit", "-qm", "one")
    first = tree_id(root, Path("app"))
    assert first and first == tree_id(root, Path("app"), "HEAD") != tree_id(root, Path("."), "HEAD")
    (root / "README.md").write_text("changed outside the folder\n")
    git(root, "commit", "-qam", "two")
    assert tree_id(root, Path("app"), "HEAD") == first == tree_id(root, Path("app"), "HEAD~1")  # same code, same id

    outputs = [root / "app" / "mlflow.db", root / "app" / ".mlflow-ci"]
    (root / "app" / "mlflow.db").write_text("store")
    (root / "app" / "mlflow.db-journal").write_text("journal")
    (root / "app" / ".mlflow-ci").mkdir()
    (root / "app" / ".mlflow-ci" / "result.json").write_text("{}")
    assert tree_id(root, Path("app")) is None  # untracked files: the checkout is not that commit's code
    assert tree_id(root, Path("app"), outputs=outputs) == first  # mlflow-ci's own outputs aside
    (root / "app" / "helper.py").write_text("y = 2\n")
    assert tree_id(root, Path("app"), outputs=outputs) is None
    (root / "app" / "helper.py").unlink()
    (root / "app" / "bot.py").write_text("x = 2\n")
    assert tree_id(root, Path("app"), outputs=outputs) is None
    assert tree_id(root, Path("app"), "no-such-commit") is None
