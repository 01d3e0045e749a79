"""Security and consistency of every workflow, action and template: each rule is a test."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from mlflow_ci import __version__
from mlflow_ci.commands.init import WORKFLOW_TARGETS, WORKFLOWS

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
WORKFLOW_FILES = sorted((ROOT / ".github" / "workflows").glob("*.yml"))
TEMPLATE_FILES = sorted((ROOT / "workflow-templates").glob("*.yml"))
ACTION_FILES = [ROOT / "action.yml", *sorted((ROOT / "actions").glob("*/action.yml"))]
ALL_YAML = [*WORKFLOW_FILES, *TEMPLATE_FILES, *ACTION_FILES]
SHA_PIN = re.compile(r"^[\w.-]+/[\w./-]+@[0-9a-f]{40} # v\d+(\.\d+)*$")


def rel(path: Path) -> str:
    return str(path.relative_to(ROOT))


def load(path: Path) -> dict:
    # PyYAML reads the key `on` as True; keep it a string
    text = path.read_text(encoding="utf-8")
    data = yaml.safe_load(text)
    if True in data:
        data["on"] = data.pop(True)
    return data


def test_zizmor_offline_has_zero_findings():
    files = [rel(p) for p in ALL_YAML]
    proc = subprocess.run([str(BIN / "zizmor"), "--offline", "--no-progress", *files], cwd=ROOT,
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "No findings to report" in proc.stdout + proc.stderr
    assert "failed to parse" not in (proc.stdout + proc.stderr).lower()


@pytest.mark.parametrize("schema, files", [
    ("vendor.github-workflows", [*WORKFLOW_FILES, *TEMPLATE_FILES]),
    ("vendor.github-actions", ACTION_FILES),
])
def test_check_jsonschema_builtin_github_schemas(schema, files):
    proc = subprocess.run([str(BIN / "check-jsonschema"), "--builtin-schema", schema, *map(str, files)],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "ok -- validation done" in proc.stdout


def all_steps(path: Path):
    data = load(path)
    if "runs" in data:
        yield from data["runs"].get("steps", [])
    for job in (data.get("jobs") or {}).values():
        yield from job.get("steps", [])


@pytest.mark.parametrize("path", ALL_YAML, ids=rel)
def test_no_expression_inside_run(path):
    for step in all_steps(path):
        assert "${{" not in step.get("run", ""), f"{rel(path)}: step {step.get('name')!r} inlines an expression in run:"


@pytest.mark.parametrize("path", ALL_YAML, ids=rel)
def test_actions_are_pinned_by_full_sha_with_version_comment(path):
    for line in path.read_text(encoding="utf-8").splitlines():
        match = re.match(r"^\s*(?:- )?uses: (.+)$", line)
        if not match:
            continue
        ref = match.group(1)
        if ref.startswith("./"):
            continue  # this repository's own action (dogfood)
        if ref.startswith("mlflow-ci/mlflow-ci/"):
            assert f"@v{__version__} # zizmor: ignore[unpinned-uses]" in ref, ref  # first-party, same release
            continue
        assert SHA_PIN.match(ref), f"{rel(path)}: {ref} is not pinned to a full commit SHA with its version"


@pytest.mark.parametrize("path", [*WORKFLOW_FILES, *TEMPLATE_FILES], ids=rel)
def test_least_privilege_permissions(path):
    data = load(path)
    assert data.get("permissions") == {}, f"{rel(path)}: the workflow must default to permissions: {{}}"
    for name, job in data["jobs"].items():
        assert "permissions" in job, f"{rel(path)}: job {name} declares no permissions"
        for scope, level in job["permissions"].items():
            assert level in ("read", "write", "none"), (scope, level)


def test_privileged_workflows_never_check_out_or_run_pr_code():
    for path in (ROOT / ".github/workflows/mlflow-ci-comment.yml", ROOT / "workflow-templates/mlflow-ci-comment.yml"):
        text = path.read_text(encoding="utf-8")
        assert "actions/checkout" not in text, rel(path)
        assert "head_sha" not in text and "head.ref" not in text, rel(path)
    data = load(ROOT / ".github/workflows/mlflow-ci-comment.yml")
    for step in data["jobs"]["publish"]["steps"]:
        run = step.get("run", "")
        assert not run or run.strip().startswith(("mlflow-ci publish --from", "python -m pip install")), run


def test_pr_workflow_gives_forks_no_comment_and_cancels_stale_runs():
    data = load(ROOT / ".github/workflows/mlflow-ci-pr.yml")
    assert data["concurrency"]["cancel-in-progress"] is True
    assert "github.event.pull_request.number" in data["concurrency"]["group"]
    env = next(s for s in data["jobs"]["check"]["steps"] if s.get("id") == "check")["env"]
    assert "head.repo.full_name == github.repository" in env["MLFLOW_CI_COMMENT"]
    deploy = load(ROOT / ".github/workflows/mlflow-ci-deploy.yml")
    assert deploy["concurrency"]["cancel-in-progress"] is False


def test_checkouts_do_not_persist_credentials():
    for path in [*WORKFLOW_FILES, *TEMPLATE_FILES]:
        for step in all_steps(path):
            if str(step.get("uses", "")).startswith("actions/checkout@"):
                assert step["with"]["persist-credentials"] is False, rel(path)


def test_reusable_workflows_install_this_release():
    for name in ("mlflow-ci-pr.yml", "mlflow-ci-comment.yml", "mlflow-ci-deploy.yml"):
        data = load(ROOT / ".github/workflows" / name)
        assert data["on"]["workflow_call"]["inputs"]["mlflow-ci-version"]["default"] == __version__, name


@pytest.mark.parametrize("template", TEMPLATE_FILES, ids=rel)
def test_workflow_templates_have_properties(template):
    props = json.loads(template.with_suffix(".properties.json").read_text(encoding="utf-8"))
    assert set(props) >= {"name", "description", "iconName", "categories", "filePatterns"}
    assert (ROOT / "workflow-templates" / f"{props['iconName']}.svg").is_file()
    assert any(re.search(p, "mlflow-ci.yml") for p in props["filePatterns"])
    text = template.read_text(encoding="utf-8")
    if "workflow_run" not in text:
        assert "$default-branch" in text


def test_init_templates_are_the_org_templates():
    for name in WORKFLOW_TARGETS:
        assert (WORKFLOWS / name).read_text() == (ROOT / "workflow-templates" / name).read_text(), name


@pytest.mark.parametrize("action", ACTION_FILES, ids=rel)
def test_every_action_input_and_output_is_documented(action):
    data = load(action)
    readme = action.parent / "README.md"
    text = readme.read_text(encoding="utf-8")
    for name in [*(data.get("inputs") or {}), *(data.get("outputs") or {})]:
        assert f"`{name}`" in text, f"{rel(readme)} does not document {name}"
    for name, meta in (data.get("inputs") or {}).items():
        assert meta.get("description"), f"{rel(action)}: input {name} has no description"
    assert "branding" in data


def test_every_reusable_workflow_has_its_doc():
    for path in WORKFLOW_FILES:
        doc = path.with_suffix(".md")
        assert doc.is_file(), f"{rel(path)} has no {doc.name} beside it"
        data = load(path)
        call = data["on"].get("workflow_call") if isinstance(data["on"], dict) else None
        for name in (call or {}).get("inputs", {}):
            assert f"`{name}`" in doc.read_text(encoding="utf-8"), f"{doc.name} does not document {name}"


def test_action_scripts_are_executable():
    for script in (ROOT / "actions").glob("*/*.sh"):
        assert script.stat().st_mode & 0o111, rel(script)
