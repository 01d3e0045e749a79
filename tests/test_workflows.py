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
DEPENDABOT = ROOT / ".github" / "dependabot.yml"
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
    files = [rel(p) for p in [*ALL_YAML, DEPENDABOT]]
    proc = subprocess.run([str(BIN / "zizmor"), "--offline", "--no-progress", "--persona=auditor", *files], cwd=ROOT,
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "No findings to report" in proc.stdout + proc.stderr
    assert "failed to parse" not in (proc.stdout + proc.stderr).lower()


@pytest.mark.parametrize("schema, files", [
    ("vendor.github-workflows", [*WORKFLOW_FILES, *TEMPLATE_FILES]),
    ("vendor.github-actions", ACTION_FILES),
    ("vendor.dependabot", [DEPENDABOT]),
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
        if ref.startswith("mlflow-ci/mlflow-ci/"):  # first-party: the release's commit, and no zizmor ignore
            assert re.fullmatch(rf"[\w./-]+@[0-9a-f]{{40}} # v{re.escape(__version__)}", ref), ref
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


SELF_SOURCE = "${{ steps.source.outputs.repository }}"


def test_privileged_workflows_never_check_out_or_run_pr_code():
    template = (ROOT / "workflow-templates/mlflow-ci-comment.yml").read_text(encoding="utf-8")
    assert "actions/checkout" not in template
    for path in (ROOT / ".github/workflows/mlflow-ci-comment.yml", ROOT / "workflow-templates/mlflow-ci-comment.yml"):
        text = path.read_text(encoding="utf-8")
        assert "head_sha" not in text and "head.ref" not in text, rel(path)
    data = load(ROOT / ".github/workflows/mlflow-ci-comment.yml")
    for step in data["jobs"]["publish"]["steps"]:
        if str(step.get("uses", "")).startswith("actions/checkout@"):
            # only mlflow-ci's own source, at the commit the workflow was called at
            assert step["with"]["repository"] == SELF_SOURCE and step["with"]["ref"] == "${{ steps.source.outputs.ref }}"
        run = step.get("run", "")
        assert not run or "mlflow-ci publish --from" in run or step.get("id") == "source" or "install.sh" in run, run


def test_pr_workflow_splits_untrusted_and_trusted_halves_and_cancels_stale_runs():
    data = load(ROOT / ".github/workflows/mlflow-ci-pr.yml")
    assert data["concurrency"]["cancel-in-progress"] is True
    assert "github.event.pull_request.number" in data["concurrency"]["group"]
    check, publish = data["jobs"]["check"], data["jobs"]["publish"]
    # the half that runs the PR's code: read-only, and no token anywhere in its steps
    assert check["permissions"] == {"contents": "read"}
    assert not any("github.token" in json.dumps(step) or "GITHUB_TOKEN" in json.dumps(step) for step in check["steps"])
    # the half that writes: same-repository PRs only (forks: workflow_run), and it never checks out the PR
    assert publish["needs"] == ["projects", "check"] and "head.repo.full_name == github.repository" in publish["if"]
    assert set(publish["permissions"]) == {"contents", "pull-requests", "checks", "statuses"}
    checkouts = [s for s in publish["steps"] if str(s.get("uses", "")).startswith("actions/checkout@")]
    assert [s["with"].get("ref") for s in checkouts] == ["${{ steps.source.outputs.ref }}", *["${{ github.event.pull_request.base.sha }}"] * 2]
    run = next(s for s in publish["steps"] if "mlflow-ci publish --from" in s.get("run", ""))
    assert "--from" in run["run"] and ".mlflow-ci-base/" in run["env"]["MLFLOW_CI_CONFIG"]
    deploy = load(ROOT / ".github/workflows/mlflow-ci-deploy.yml")
    assert deploy["concurrency"]["cancel-in-progress"] is False


def test_checkouts_do_not_persist_credentials():
    for path in [*WORKFLOW_FILES, *TEMPLATE_FILES]:
        for step in all_steps(path):
            if str(step.get("uses", "")).startswith("actions/checkout@"):
                assert step["with"]["persist-credentials"] is False, rel(path)


INIT_TEMPLATES = sorted(WORKFLOWS.glob("*.yml"))
SCRIPTS = sorted(ROOT.glob("actions/*/*.sh"))
BY_NAME = re.compile(r"\b(?:pip3?|uv pip|uv tool|pipx|uvx|python3? -m pip)\b[^\n]*?\binstall\b[^\n]*?\bmlflow[-_]ci\b|\bmlflow[-_]ci\s*[=<>~!]=|\b(?:uvx|pipx run|uv tool run)\b[^\n]*?\bmlflow[-_]ci\b", re.I)


@pytest.mark.parametrize("path", [*ALL_YAML, *INIT_TEMPLATES, *SCRIPTS], ids=rel)
def test_nothing_installs_mlflow_ci_by_name_from_an_index(path):
    """Whoever registered the name would run code in jobs holding write tokens and MLflow credentials."""
    text = path.read_text(encoding="utf-8")
    assert not BY_NAME.search(text), f"{rel(path)}: {BY_NAME.search(text).group(0)}"


def test_the_by_name_check_catches_the_usual_spellings():
    for line in ('pip install mlflow-ci', 'uv pip install --system "mlflow-ci==${V}"', "python -m pip install -U mlflow_ci",
                 'packages=("mlflow-ci==1.0")', "uvx mlflow-ci check"):
        assert BY_NAME.search(line), line
    assert not BY_NAME.search('uv pip install "$MLFLOW_CI_SOURCE"')


@pytest.mark.parametrize("name", ["mlflow-ci-pr.yml", "mlflow-ci-comment.yml", "mlflow-ci-deploy.yml"])
def test_reusable_workflows_install_the_commit_they_were_called_at(name):
    data = load(ROOT / ".github/workflows" / name)
    inputs = data["on"]["workflow_call"]["inputs"]
    assert {"mlflow-ci-repository", "mlflow-ci-ref"} <= set(inputs)  # GitHub Enterprise Server
    for job_name, job in data["jobs"].items():
        steps = job["steps"]
        ids = [s.get("id") for s in steps]
        assert "source" in ids, f"{name}: job {job_name} does not locate its own source"
        source = steps[ids.index("source")]
        assert source["env"]["WORKFLOW_SHA"] == "${{ job.workflow_sha }}"
        assert source["env"]["WORKFLOW_REPOSITORY"] == "${{ job.workflow_repository }}"
        assert "::error" in source["run"]
        checkout = steps[ids.index("source") + 1]
        assert checkout["uses"].startswith("actions/checkout@")
        assert checkout["with"]["ref"] == "${{ steps.source.outputs.ref }}"
        assert checkout["with"]["persist-credentials"] is False and "sparse-checkout" in checkout["with"]
        install = steps[ids.index("source") + 2]
        assert "actions/setup/install.sh" in install["run"]
        uses_cli = [i for i, s in enumerate(steps) if re.search(r"^\s*mlflow-ci ", s.get("run", ""), re.M)]
        assert uses_cli and min(uses_cli) > ids.index("source") + 2, f"{name}: job {job_name} runs mlflow-ci before installing it"


# The first major of each action that runs on Node 24 (Node 20 left the hosted runners in September
# 2026), read from each release's action.yml (`runs.using`). Composite and Docker actions run no Node.
NODE24_SINCE = {"actions/checkout": 5, "actions/setup-python": 6, "astral-sh/setup-uv": 7, "actions/upload-artifact": 6,
                "actions/download-artifact": 7, "actions/cache": 5}
NOT_NODE = {"pypa/gh-action-pypi-publish": "docker", "actions/attest-build-provenance": "composite",
            "mlflow-ci/mlflow-ci": "reusable workflows"}


@pytest.mark.parametrize("path", ALL_YAML, ids=rel)
def test_every_action_is_a_node24_release(path):
    for match in re.finditer(r"uses: ([\w.-]+/[\w.-]+)(?:/[\w./-]+)?@[0-9a-f]{40} # v(\d+)", path.read_text(encoding="utf-8")):
        action, major = match.group(1), int(match.group(2))
        assert action in NODE24_SINCE or action in NOT_NODE, f"{rel(path)}: {action} is not in the table of verified actions"
        if action in NODE24_SINCE:
            assert major >= NODE24_SINCE[action], f"{rel(path)}: {action} v{major} runs on Node 20"


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


def test_jobs_that_write_to_github_never_check_out_the_pull_request():
    data = load(ROOT / ".github/workflows/mlflow-ci-pr.yml")
    for name, job in data["jobs"].items():
        writes = any(level == "write" for level in job["permissions"].values())
        checkouts = [s for s in job["steps"] if str(s.get("uses", "")).startswith("actions/checkout@")]
        if writes:
            for step in checkouts:
                ref = step.get("with", {}).get("ref")
                assert ref in ("${{ steps.source.outputs.ref }}", "${{ github.event.pull_request.base.sha }}"), (name, ref)


def test_templates_pin_one_commit_that_holds_the_called_workflows():
    """What users copy needs no zizmor ignore: the reusable workflows are called by commit SHA
    (.github/scripts/pin_templates.py), and that commit has them."""
    refs = {(name, sha) for path in TEMPLATE_FILES
            for name, sha in re.findall(r"mlflow-ci/mlflow-ci/\.github/workflows/([\w.-]+)@([0-9a-f]{40})", path.read_text())}
    assert len({sha for _, sha in refs}) == 1 and len(refs) == 3, refs
    for path in TEMPLATE_FILES:
        assert "zizmor: ignore[unpinned-uses]" not in path.read_text(), rel(path)
    if not (ROOT / ".git").exists():
        pytest.skip("not a git checkout: the pinned commit cannot be looked up")
    for name, sha in refs:
        found = subprocess.run(["git", "cat-file", "-e", f"{sha}:.github/workflows/{name}"], cwd=ROOT, capture_output=True)
        assert found.returncode == 0, f"{sha} has no .github/workflows/{name}"
    # GitHub refuses a call that passes an input or secret the called workflow does not declare, so a
    # template must match the workflows *at the commit it pins*, not the ones in this tree
    from actengine import refused_call

    for path in TEMPLATE_FILES:
        text = path.read_text()
        for name, sha in re.findall(r"mlflow-ci/mlflow-ci/\.github/workflows/([\w.-]+)@([0-9a-f]{40})", text):
            called = subprocess.run(["git", "show", f"{sha}:.github/workflows/{name}"], cwd=ROOT, capture_output=True,
                                    text=True, check=True).stdout
            assert refused_call(text, name, called) == [], f"{rel(path)} calls {name}@{sha[:12]}: GitHub would refuse it"


def test_the_pin_script_rewrites_every_first_party_reference(tmp_path, monkeypatch):
    import importlib.util

    spec = importlib.util.spec_from_file_location("pin_templates", ROOT / ".github" / "scripts" / "pin_templates.py")
    pin_templates = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(pin_templates)
    folder = tmp_path / "templates"
    folder.mkdir()
    (folder / "a.yml").write_text("jobs:\n  x:\n    uses: mlflow-ci/mlflow-ci/.github/workflows/mlflow-ci-pr.yml@v0.0.9 # old\n"
                                  "  y:\n    uses: actions/checkout@v1\n")
    monkeypatch.setattr(pin_templates, "TEMPLATE_DIRS", (folder,))
    assert pin_templates.pin("ab" * 20) == [folder / "a.yml"]
    text = (folder / "a.yml").read_text()
    assert f"mlflow-ci-pr.yml@{'ab' * 20} # v{__version__}\n" in text and "actions/checkout@v1" in text
    assert pin_templates.pins() == {folder / "a.yml": [("mlflow-ci-pr.yml", "ab" * 20, __version__)]}
    with pytest.raises(SystemExit):
        pin_templates.pin("v1.0.0")


def _store_key(workflow: str, folder: str, branch: str, scratch: Path) -> str:
    """The store cache key prefix the workflow's "Which store" step computes, run by bash."""
    doc = yaml.safe_load((ROOT / ".github" / "workflows" / workflow).read_text())
    job = doc["jobs"]["check" if workflow == "mlflow-ci-pr.yml" else "promote"]
    step = next(s for s in job["steps"] if s.get("name") == "Which store")
    script = step["run"].replace('rm -rf "$GITHUB_WORKSPACE/.mlflow-ci-store"', "")
    out = scratch / f"output-{len(list(scratch.iterdir()))}"
    subprocess.run(["bash", "-eo", "pipefail", "-c", script], check=True, env={
        "PATH": "/usr/bin:/bin", "GITHUB_OUTPUT": str(out), "WORKING_DIRECTORY": folder, "BRANCH": branch,
        "SECRET_TRACKING_URI": ""})
    return dict(line.split("=", 1) for line in out.read_text().splitlines())["key"]


@pytest.mark.parametrize("workflow", ["mlflow-ci-pr.yml", "mlflow-ci-deploy.yml"])
def test_store_cache_keys_of_two_projects_never_collide_or_prefix_each_other(workflow, tmp_path):
    """actions/cache restores by key prefix: folder/branch pairs whose readable names collide
    (models/churn, models_churn) or prefix one another (a on main, a-main on main) get unrelated keys."""
    pairs = [(("a", "main"), ("a-main", "main")), (("models/churn", "main"), ("models_churn", "main")),
             (("a", "main-x"), ("a-main", "x")), ((".", "main"), (".", "main-old"))]
    for one, other in pairs:
        k1, k2 = _store_key(workflow, *one, tmp_path), _store_key(workflow, *other, tmp_path)
        assert not k1.startswith(k2) and not k2.startswith(k1), (one, other, k1, k2)
    # both workflows name the same store (the PR's base branch is the branch the deploy job saved)
    assert _store_key(workflow, ".", "main", tmp_path) == _store_key("mlflow-ci-pr.yml", ".", "main", tmp_path)
