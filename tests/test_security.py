"""Attacks from the hostile review (issue 13), each reproduced under the old conditions, each now failing
to achieve its effect; and a bounded fuzz run over every input that comes from outside."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from fakegithub import EVENTS, TOKEN, FakeGitHub
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mlflow_ci.config.loader import parse_config
from mlflow_ci.errors import ConfigError, TrainingError, UsageError, printable
from mlflow_ci.report import md, public_url, render_markdown
from mlflow_ci.result import Result, validate_untrusted
from mlflow_ci.train import read_metrics_file

SHA = "a" * 40
HOSTILE_TEMPLATE = "{{ cycler.__init__.__globals__.os.environ }}{{ ''.__class__.__mro__[1].__subclasses__() }}"


def artifact(**extra) -> dict:
    run = json.loads((EVENTS / "workflow_run.completed.with-pull-requests.json").read_text())["workflow_run"]
    return {"schema": 1, "verdict": "pass", "experiment": "churn", "pr": run["pull_requests"][0]["number"],
            "head_sha": run["head_sha"], "candidate": {"run_id": "c" * 32, "metrics": {"accuracy": 0.9}},
            "baseline": None, "checks": [], **extra}


def workflow_run_env(project, gh, tmp_path, **extra):
    event = tmp_path / "event.json"
    event.write_text((EVENTS / "workflow_run.completed.with-pull-requests.json").read_text())
    return project.env(GITHUB_ACTIONS="true", GITHUB_EVENT_NAME="workflow_run", GITHUB_EVENT_PATH=str(event),
                       GITHUB_REPOSITORY="octo-org/octo-repo", GITHUB_API_URL=gh.url, GITHUB_TOKEN=TOKEN,
                       GITHUB_OUTPUT=str(tmp_path / "output"), GITHUB_STEP_SUMMARY=str(tmp_path / "summary"), **extra)


# --- the privileged publisher ---------------------------------------------------------------------


def test_an_artifact_cannot_bring_its_own_config_or_template(project, tmp_path):
    """Unpacked into the workspace, a config naming a template that reads the environment ran in the
    job holding the write token. Now --from reads neither."""
    project.write("mlflow-ci.yml", "experiment: churn\ntrain: {command: x}\nreport: {template: evil.md.j2}\n")
    project.write("evil.md.j2", HOSTILE_TEMPLATE)
    (tmp_path / "result.json").write_text(json.dumps(artifact()))
    with FakeGitHub(TOKEN) as gh:
        proc = project.cli("publish", "--from", str(tmp_path / "result.json"), "--out", str(tmp_path / "out"),
                           env=workflow_run_env(project, gh, tmp_path))
        assert proc.returncode == 0, proc.stdout + proc.stderr
        body = next(iter(gh.comments.values()))[0]["body"]
    assert "environ" not in body and TOKEN[:8] not in body and "mlflow-ci · churn" in body


def test_a_repository_template_is_sandboxed(tmp_path):
    (tmp_path / "t.md.j2").write_text(HOSTILE_TEMPLATE)
    cfg = parse_config("experiment: e\ntrain: {command: x}\nreport: {template: t.md.j2}\n", tmp_path / "mlflow-ci.yml")
    result = Result.build(artifact())
    with pytest.raises(UsageError, match=r"report template t\.md\.j2: .*unsafe"):
        render_markdown(result, cfg.report, cfg.root)


def test_the_retry_path_under_workflow_run_takes_the_pr_from_the_event(project, tmp_path):
    """`publish --out DIR` under workflow_run took the PR number from result.json: another PR's report
    could be overwritten. Now the event decides, and a disagreeing file is refused."""
    out = tmp_path / "out"
    out.mkdir()
    (out / "result.json").write_text(json.dumps(artifact(pr=99)))
    with FakeGitHub(TOKEN) as gh:
        proc = project.cli("publish", "--out", str(out), env=workflow_run_env(project, gh, tmp_path))
        assert proc.returncode == 2 and "does not match the workflow_run event: PR #99" in proc.stderr
        assert not gh.comments


def test_a_fork_verdict_is_never_the_required_check(project, tmp_path):
    (tmp_path / "result.json").write_text(json.dumps(artifact()))
    with FakeGitHub(TOKEN) as gh:
        proc = project.cli("publish", "--from", str(tmp_path / "result.json"), env=workflow_run_env(project, gh, tmp_path))
        assert proc.returncode == 0, proc.stderr
        assert [c["name"] for c in gh.check_runs] == ["mlflow-ci / churn (fork, unverified)"]


def test_raw_fields_of_an_artifact_stay_text(tmp_path):
    hostile = artifact(tool={"version": "<img src=https://evil.test/x>@org/team"},
                       candidate={"run_id": "c" * 32, "url": "https://evil.test/phish", "metrics": {}},
                       baseline={"run_id": "b" * 32, "url": "https://evil.test/phish", "metrics": {}})
    result = validate_untrusted(hostile)
    markdown = render_markdown(result, parse_config("experiment: e\ntrain: {command: x}\n", tmp_path / "c.yml").report, tmp_path)
    assert "<img" not in markdown and "evil.test/phish" not in markdown and "@org" not in markdown


# --- text that reaches logs and comments ----------------------------------------------------------


def test_untrusted_keys_cannot_inject_workflow_commands(project):
    project.write("mlflow-ci.yml", 'experiment: e\ntrain: {command: x}\n"x\\n::error::pwned": 1\n')
    proc = project.cli("validate")
    assert proc.returncode == 2
    assert not any(line.lstrip().startswith("::") for line in proc.stderr.splitlines()), proc.stderr
    assert printable("a\r\n::set-env name=X::1") == "a ::set-env name=X::1"  # no longer at the start of a line
    assert printable("::error::x") == ":\u200b:error::x"
    # the runner's legacy form is obeyed anywhere in a line
    assert "##[" not in printable("step said ##[set-output name=verdict;]pass") and "##[" not in printable("##[error]x")


def test_md_neutralises_links_references_and_bidi():
    out = md("visit www.evil.test, see GH-12 and #3, ping @team \u202eevil\u200b")
    assert "www.evil" not in out and "GH-12" not in out and "#3" not in out and "@team" not in out
    assert "\u202e" not in out and "\u200b" not in out.replace("&#8203;", "")


def test_run_links_never_carry_credentials():
    assert public_url("https://alice:p@ss@mlflow.test:8443/ui/?token=1#frag") == "https://mlflow.test:8443/ui"
    assert public_url("ftp://host") is None


def test_a_token_with_a_trailing_newline_is_used_stripped_and_never_printed(project, tmp_path):
    (tmp_path / "result.json").write_text(json.dumps(artifact()))
    with FakeGitHub("another-token") as gh:  # the token is refused: its error must not show it
        env = workflow_run_env(project, gh, tmp_path)
        env["GITHUB_TOKEN"] = TOKEN + "\n"
        proc = project.cli("publish", "--from", str(tmp_path / "result.json"), env=env)
    assert proc.returncode == 4
    assert TOKEN not in (proc.stdout + proc.stderr).replace(f"::add-mask::{TOKEN}", "")


# --- the training subprocess ----------------------------------------------------------------------


def test_pr_code_holds_no_token_and_cannot_store_one(project):
    project.write("train.py", """
        import json, os
        leaked = {k: os.environ.get(k) for k in ("GITHUB_TOKEN", "GH_TOKEN", "ACTIONS_RUNTIME_TOKEN", "ACTIONS_ID_TOKEN_REQUEST_TOKEN")}
        print("env:", json.dumps(leaked))
        json.dump({"accuracy": 0.9, "rmse": 5.0}, open("metrics.json", "w"))
    """)
    env = project.env(GITHUB_TOKEN=TOKEN, GH_TOKEN=TOKEN, ACTIONS_RUNTIME_TOKEN="runtime-secret",
                      ACTIONS_ID_TOKEN_REQUEST_TOKEN="oidc-secret")
    proc = project.cli("check", "--no-publish", env=env)
    assert proc.returncode == 0, proc.stderr
    log = (project.root / ".mlflow-ci" / "train.log").read_text()
    assert 'env: {"GITHUB_TOKEN": null, "GH_TOKEN": null, "ACTIONS_RUNTIME_TOKEN": null, "ACTIONS_ID_TOKEN_REQUEST_TOKEN": null}' in log
    assert TOKEN not in log and "secret" not in log


# --- bad input: the documented exit code, bounded --------------------------------------------------


def test_a_yaml_alias_bomb_is_refused(project):
    lines = ["experiment: e", "train: {command: x}", "a: &a [" + ",".join(['"lol"'] * 9) + "]"]
    for prev, name in zip("abcdefgh", "bcdefghi"):
        lines.append(f"{name}: &{name} [" + ",".join([f"*{prev}"] * 9) + "]")
    project.write("mlflow-ci.yml", "\n".join(lines) + "\n")
    assert len((project.root / "mlflow-ci.yml").read_bytes()) < 600
    proc = project.cli("validate")
    assert proc.returncode == 2 and "expands to more than 20,000 values" in proc.stderr
    project.write("mlflow-ci.yml", "experiment: e\ntrain: &t {command: x, env: *t}\n")
    proc = project.cli("validate")
    assert proc.returncode == 2 and "nested more than 64 levels" in proc.stderr


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4),
    max_leaves=20,
)
FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])


@FUZZ
@given(text=st.text(max_size=300) | st.builds(lambda d: json.dumps(d), json_values))
def test_fuzz_config_only_ever_fails_as_a_config_error(text):
    try:
        parse_config(text, Path("/repo/mlflow-ci.yml"))
    except ConfigError as exc:
        assert all("\n" not in line for line in exc.lines())


@FUZZ
@given(data=st.binary(max_size=200) | st.builds(lambda d: json.dumps(d).encode(), json_values)
       | st.builds(lambda n: b'{"a": ' + str(n).encode() + b"}", st.integers(min_value=10**300)))
def test_fuzz_metrics_files_only_ever_fail_as_training_errors(tmp_path_factory, data):
    path = tmp_path_factory.mktemp("m") / "metrics.json"
    path.write_bytes(data)
    try:
        metrics = read_metrics_file(path, "metrics.json")
    except TrainingError:
        return
    assert all(isinstance(v, float) for v in metrics.values())


@FUZZ
@given(overrides=st.dictionaries(st.sampled_from(["verdict", "pr", "checks", "candidate", "baseline", "schema", "metrics",
                                                   "tool", "notes", "head_sha"]), json_values, max_size=3))
def test_fuzz_artifacts_only_ever_fail_as_usage_errors(overrides):
    try:
        result = validate_untrusted({**artifact(), **overrides})
    except UsageError as exc:
        assert "\n" not in exc.message
        return
    assert all(c.passed is None or type(c.passed) is bool for c in result.checks)  # never 0 or "yes"
    assert all(v is None or type(v) is float for v in result.candidate.metrics.values())
    json.loads(result.text(), parse_constant=lambda c: pytest.fail(f"invalid JSON constant {c}"))


def test_the_trusted_half_publishes_only_its_configured_experiment(project, tmp_path):
    """Under pull_request the publisher reads the base commit's config: an artifact claiming another
    experiment (another required check's name) is refused."""
    payload = json.loads((EVENTS / "pull_request.opened.json").read_text())
    event = tmp_path / "event.json"
    event.write_text(json.dumps(payload))
    head = payload["pull_request"]["head"]["sha"]
    (tmp_path / "result.json").write_text(json.dumps({**artifact(experiment="payments"), "pr": 2, "head_sha": head}))
    with FakeGitHub(TOKEN) as gh:
        env = project.env(GITHUB_ACTIONS="true", GITHUB_EVENT_NAME="pull_request", GITHUB_EVENT_PATH=str(event),
                          GITHUB_REPOSITORY="Codertocat/Hello-World", GITHUB_API_URL=gh.url, GITHUB_TOKEN=TOKEN)
        proc = project.cli("publish", "--from", str(tmp_path / "result.json"), env=env)
        assert proc.returncode == 2 and "is for experiment 'payments', the configuration's is 'churn'" in proc.stderr
        assert not gh.check_runs and not gh.comments
        (tmp_path / "result.json").write_text(json.dumps({**artifact(experiment="churn"), "pr": 2, "head_sha": head}))
        proc = project.cli("publish", "--from", str(tmp_path / "result.json"), env=env)
        assert proc.returncode == 0, proc.stderr
        assert [(c["name"], c["head_sha"]) for c in gh.check_runs] == [("mlflow-ci / churn", head)]


def test_an_artifacts_run_link_never_reaches_the_comment():
    """The error report links the job's log only when the result is our own; an artifact's ci_run_url is dropped."""
    from mlflow_ci.report import error_markdown
    from mlflow_ci.config.models import ReportConfig
    from mlflow_ci.result import Result, validate_untrusted

    data = {"schema": 1, "verdict": "error", "experiment": "e", "candidate": {}, "checks": [],
            "ci_run_url": "https://evil.test/phish",
            "error": {"stage": "train", "exit_code": 3, "reason": "boom", "hint": None}}
    untrusted = validate_untrusted(data)
    assert untrusted.ci_run_url is None and "evil.test" not in error_markdown(untrusted, ReportConfig())
    ours = Result.build(data)
    assert "[workflow run](https://evil.test/phish)" in error_markdown(ours, ReportConfig())  # our own link is kept
