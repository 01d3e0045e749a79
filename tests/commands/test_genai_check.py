"""`check` with `genai:`: a FAQ app in a real git repository, the pull request's code against the base
commit's on the same rows, gated on a scorer's pass rate with a paired interval."""

from __future__ import annotations

import json

from conftest import git

APP = '''
FAQ = {"hours": "We are open 9 to 5.", "refund": "Refunds take 14 days.", "shipping": "Shipping is free over 50 EUR.",
       "returns": "Returns within 30 days."}
TEMPLATE = "{text}"

def answer(topic, n):
    return TEMPLATE.format(text=FAQ[topic], n=n)
'''
FACTS = {"hours": "9 to 5", "refund": "14 days", "shipping": "50 EUR", "returns": "30 days"}
CONFIG = """\
experiment: faq-bot
train:
  command: python train.py
  metrics_file: metrics.json
  inputs: ["*.py", "params.json"]
genai:
  data: faq.jsonl
  predict_fn: faq_app:answer
  scorers: [contains, {max_length: 60}, tone:calm]
  resamples: 500
gate:
  genai.contains: {min: 0.5, max_drop: 0, significance: 0.05}
  genai.max_length: {min: 0.9, mode: warn}
"""


def faq_project(project):
    project.write("faq_app.py", APP)
    project.write("tone.py", "def calm(outputs):\n    return (not outputs.isupper(), 'no shouting')\n")
    rows = [{"inputs": {"topic": topic, "n": n}, "expectations": {"expected_facts": [FACTS[topic]]}}
            for n in range(48) for topic in [list(FACTS)[n % 4]]]
    project.write("faq.jsonl", "\n".join(json.dumps(r) for r in rows) + "\n")
    project.write("mlflow-ci.yml", CONFIG)
    project.commit("a FAQ bot")


def pr(project, branch: str, template: str):
    project.branch(branch)
    project.write("faq_app.py", APP.replace('TEMPLATE = "{text}"', f"TEMPLATE = {template!r}"))
    project.commit(f"template on {branch}")
    return project.cli("check", "--no-publish", "--base-branch", "main")


def test_a_template_that_loses_the_facts_fails_with_the_rows_that_regressed(project):
    faq_project(project)
    on_main = project.cli("check", "--no-publish")
    assert on_main.returncode == 0, on_main.stdout + on_main.stderr
    assert project.result()["genai"]["baseline"] == "this is the base commit itself"
    main_run = project.result()["candidate"]["run_id"]

    broken = pr(project, "pr/short", "{text:.12}")
    assert broken.returncode == 1, broken.stdout + broken.stderr
    result = project.result()
    contains = next(m for m in result["metrics"] if m["name"] == "genai.contains")
    assert contains["baseline"] == 1.0 and contains["candidate"] < 0.5 and contains["ci_high"] < 0
    failed = {(c["metric"], c["rule"]) for c in result["checks"] if c["passed"] is False}
    assert ("genai.contains", "max_drop") in failed
    g = result["genai"]
    assert g["baseline"].startswith("the app at base commit ") and g["regressed"]["contains"] >= 24
    assert g["changed"][0]["change"] == "regressed" and g["changed"][0]["baseline_output"] == "We are open 9 to 5."
    report = (project.root / ".mlflow-ci" / "report.md").read_text()
    assert "<details open><summary>GenAI: faq\\_app:answer on 48 rows of faq.jsonl" in report
    assert "| ❌ | contains |" in report and "| We are open | We are open 9 to 5. | missing 1 of 1 expected facts: 9 to 5 |" in report
    # main's check answered and scored this code on these rows already: the baseline is not run again
    assert g["reused"] == {"baseline": main_run} and not (project.root / ".mlflow-ci" / "genai-baseline.log").exists()
    assert f"the baseline's answers and verdicts reused from run {main_run}" in " ".join(result["notes"])

    again = project.cli("check", "--no-publish", "--base-branch", "main", "--no-cache")
    assert again.returncode == 1 and project.result()["genai"]["reused"] is None
    assert project.result()["metrics"] == result["metrics"]  # the same numbers, computed afresh
    assert (project.root / ".mlflow-ci" / "genai-baseline.log").exists()
    assert "mlflow-ci-genai-base" not in git(project.root, "worktree", "list")  # the base commit's worktree is gone

    git(project.root, "checkout", "-q", "main")
    better = pr(project, "pr/polite", "Thanks for asking! {text}")
    assert better.returncode == 0, better.stdout + better.stderr
    g = project.result()["genai"]
    assert g["regressed"] == {"contains": 0, "max_length": 0, "calm": 0} and g["changed"] == []
    calm = next(m for m in project.result()["metrics"] if m["name"] == "genai.calm")
    assert calm["candidate"] == calm["baseline"] == 1.0  # the repository's own scorer, on both apps


def judged_config(url: str, max_calls: int) -> str:
    return CONFIG.replace("  scorers: [contains, {max_length: 60}, tone:calm]\n", f"""\
  scorers:
    - contains
    - {{max_length: 60}}
    - judge: {{name: says_when, instructions: "Does the answer give a number of days or hours?"}}
  judge: {{model: judge-1, base_url: "{url}", api_key_env: JUDGE_KEY, max_calls: {max_calls}}}
""")


def test_a_judge_scorer_in_a_check_within_its_budget_and_a_check_that_would_overspend(project):
    from fakellm import FakeLLM

    def answer(body):  # the judge passes an answer that names days, or the hours 9 to 5
        text = body["messages"][1]["content"].split("Answer:\n", 1)[1].split("\n\nExpectations:")[0]
        return '{"verdict": "%s", "rationale": "checked"}' % ("pass" if "days" in text or "9 to 5" in text else "fail")

    faq_project(project)
    with FakeLLM(answer=answer) as llm:
        project.write("mlflow-ci.yml", judged_config(llm.url, 96))  # 48 rows, both apps
        project.commit("a judge")
        project.branch("pr/short")
        project.write("faq_app.py", APP.replace('TEMPLATE = "{text}"', "TEMPLATE = '{text:.12}'"))
        project.commit("short answers")
        env = project.env(JUDGE_KEY="sk-judge-test")
        checked = project.cli("check", "--no-publish", "--base-branch", "main", env=env)
        assert checked.returncode == 1, checked.stdout + checked.stderr
        assert len(llm.requests) == 96 and "sk-judge-test" not in checked.stdout + checked.stderr
        g = project.result()["genai"]
        assert g["judge"]["calls"] == 96 and g["regressed"]["says_when"] > 0 and "says_when" in g["scorers"]
        assert "Judges: 96 of 96 requests" in (project.root / ".mlflow-ci" / "report.md").read_text()

        rerun = project.cli("check", "--no-publish", "--base-branch", "main", env=env)  # the same commit again
        assert rerun.returncode == 1 and len(llm.requests) == 96  # both sides' verdicts reused: no judge call
        assert project.result()["genai"]["reused"].keys() == {"candidate", "baseline"}

        project.write("mlflow-ci.yml", judged_config(llm.url, 50))
        project.commit("a smaller budget")
        stopped = project.cli("check", "--no-publish", "--base-branch", "main", "--no-cache", env=env)
        assert stopped.returncode == 4, stopped.stdout + stopped.stderr
        assert len(llm.requests) == 96 + 50  # not one request beyond the budget
        result = project.result()
        assert result["verdict"] == "error" and "judge budget spent: 50 of max_calls 50" in result["error"]["reason"]
        assert "Traceback" not in stopped.stderr


DATASET_SCRIPT = """
import json, sys
from mlflow.genai.datasets import create_dataset
create_dataset(name="faq-eval").merge_records(json.load(open(sys.argv[1])))
"""


def mlflow_config(url: str) -> str:
    return CONFIG.replace("  data: faq.jsonl\n", "  dataset: faq-eval\n").replace(
        "  scorers: [contains, {max_length: 60}, tone:calm]\n", f"""\
  scorers:
    - contains
    - {{max_length: 60}}
    - mlflow: Correctness
    - mlflow: {{scorer: ResponseLength, max_length: 20, name: short}}
    - judge: {{name: polite, instructions: "Is the answer polite?"}}
  judge: {{model: "openai:/judge-1", base_url: "{url}", api_key_env: JUDGE_KEY, max_calls: 48}}
""") + "  genai.correctness: {min: 0.5, max_drop: 0}\n"


def two_judges(body):
    """MLflow's Correctness (asks for {result, rationale}): the claim's fact must be in the document; our judge: polite."""
    text = body["messages"][-1]["content"]
    if "response_format" in body:
        claim = text.split("<claim>", 1)[1].split("</claim>", 1)[0]
        document = text.split("<document>", 1)[1].split("</document>", 1)[0]
        supported = all(fact in document for fact in FACTS.values() if fact in claim)
        return json.dumps({"result": "yes" if supported else "no", "rationale": "checked the facts"})
    return '{"verdict": "pass", "rationale": "polite enough"}'


def test_mlflows_scorers_on_an_mlflow_dataset_through_the_budget_and_nothing_leaves_loopback(project, tmp_path):
    import subprocess
    import sys

    from fakellm import FakeLLM
    from netaudit import audited

    faq_project(project)
    rows = [{"inputs": {"topic": topic, "n": n}, "expectations": {"expected_facts": [FACTS[topic]]}}
            for n in range(12) for topic in [list(FACTS)[n % 4]]]
    (tmp_path / "rows.json").write_text(json.dumps(rows))
    (tmp_path / "make_dataset.py").write_text(DATASET_SCRIPT)
    subprocess.run([sys.executable, str(tmp_path / "make_dataset.py"), str(tmp_path / "rows.json")],
                   env=project.env(MLFLOW_DISABLE_TELEMETRY="true"), check=True, capture_output=True)
    with FakeLLM(answer=two_judges) as llm:
        project.write("mlflow-ci.yml", mlflow_config(llm.url))
        project.commit("MLflow's scorers on MLflow's dataset")
        project.branch("pr/short")
        project.write("faq_app.py", APP.replace('TEMPLATE = "{text}"', "TEMPLATE = '{text:.12}'"))
        project.commit("short answers")
        env, connections = audited(tmp_path, project.env(JUDGE_KEY="sk-judge-test"))
        checked = project.cli("check", "--no-publish", "--base-branch", "main", env=env)
    assert checked.returncode == 1, checked.stdout + checked.stderr
    assert connections.read_text() == ""  # no process of the check connected to, or resolved, a host beyond loopback
    result = project.result()
    g = result["genai"]
    assert g["data"].startswith("MLflow dataset faq-eval (digest ") and g["rows"] == 12
    # main was never checked: no baseline run, yet the base commit's app is the baseline the gate compares with
    assert (result["baseline"]["run_id"], result["baseline"]["source"]) == (None, "genai:base_commit")
    assert g["scorers"] == ["contains", "max_length", "correctness", "short", "polite"]
    metrics = {m["name"]: m for m in result["metrics"]}
    assert metrics["genai.correctness"]["baseline"] == 1.0 and metrics["genai.correctness"]["candidate"] < 0.5
    assert (metrics["genai.short"]["baseline"], metrics["genai.short"]["candidate"]) == (0.25, 1.0)  # MLflow's ResponseLength
    assert ("genai.correctness", "max_drop") in {(c["metric"], c["rule"]) for c in result["checks"] if c["passed"] is False}
    # 12 rows x 2 apps x (Correctness + polite): exactly the budget, every request pinned and keyed by the proxy
    assert len(llm.requests) == 48 == g["judge"]["calls"] and g["judge"]["flipped"] == {"correctness": 0, "polite": 0}
    assert {(r["body"]["model"], r["body"]["temperature"], r["auth"]) for r in llm.requests} == {("judge-1", 0, "Bearer sk-judge-test")}
    assert "sk-judge-test" not in checked.stdout + checked.stderr

    digest = g["data"].rsplit(" ", 1)[-1].rstrip(")")
    project.write("mlflow-ci.yml", mlflow_config(llm.url).replace("  dataset: faq-eval\n", "  dataset: {name: faq-eval, digest: 0123abcd}\n"))
    project.commit("pin the rows")
    pinned = project.cli("check", "--no-publish", "--base-branch", "main", env=env)
    assert pinned.returncode == 2 and "Traceback" not in pinned.stderr
    assert f"genai.dataset.digest: MLflow dataset faq-eval has digest {digest}, not 0123abcd" in pinned.stderr


def test_deferred_judging_the_check_job_never_holds_the_key_and_the_publisher_judges(project, tmp_path):
    """Issue #26, attack 4: in the two-job workflow the check job (the PR's code) gets no key. It answers the rows
    with both apps and leaves the judge's rules pending; the trusted publisher judges those answers, with the base
    commit's judge settings and the key, and publishes the completed verdict. Without answers, or with no judge
    configured at the base, the pending rules fail: a check is never passed over a judge that did not run."""
    from fakegithub import EVENTS, TOKEN, FakeGitHub
    from fakellm import FakeLLM

    from conftest import based_on

    def answer(body):
        text = body["messages"][1]["content"].split("Answer:\n", 1)[1].split("\n\nExpectations:")[0]
        return '{"verdict": "%s", "rationale": "checked"}' % ("pass" if "days" in text or "9 to 5" in text else "fail")

    faq_project(project)
    with FakeLLM(answer=answer) as llm, FakeGitHub(TOKEN) as gh:
        config = judged_config(llm.url, 96) + "  genai.says_when: {min: 0.3, max_drop: 0.05}\n"
        project.write("mlflow-ci.yml", config)
        project.write("env_app.py", "import os\n\ndef answer(topic, n):\n    return ' '.join(sorted(k for k in os.environ if 'KEY' in k))\n")
        base = project.commit("a judge")
        project.branch("pr/short")
        project.write("faq_app.py", APP.replace('TEMPLATE = "{text}"', "TEMPLATE = '{text:.12}'"))
        project.commit("short answers")
        checked = project.cli("check", "--no-publish", "--base-branch", "main", "--defer-judging", env=project.env())
        assert checked.returncode == 1, checked.stdout + checked.stderr  # contains regressed: no judge needed to see it
        assert llm.requests == []  # no key was read, no judge asked
        result = project.result()
        assert result["genai"]["pending"] == ["genai.says_when"] and result["genai"]["judged_by"] is None
        pending = [c for c in result["checks"] if c["metric"] == "genai.says_when"]
        assert pending and all(c["passed"] is None and c["message"].startswith("pending: ") for c in pending)
        assert (project.root / ".mlflow-ci" / "genai-answers.json").is_file()

        # the trusted publisher: the base commit's configuration, the key, the event's PR
        payload = based_on(json.loads((EVENTS / "pull_request.opened.json").read_text()), project.root, base)
        payload["pull_request"]["head"]["sha"] = git(project.root, "rev-parse", "HEAD")
        event = tmp_path / "event.json"
        event.write_text(json.dumps(payload))
        base_config = tmp_path / "base" / "mlflow-ci.yml"
        base_config.parent.mkdir()
        base_config.write_text(config)
        publisher = project.env(GITHUB_ACTIONS="true", GITHUB_EVENT_NAME="pull_request", GITHUB_EVENT_PATH=str(event),
                                GITHUB_REPOSITORY="Codertocat/Hello-World", GITHUB_API_URL=gh.url, GITHUB_TOKEN=TOKEN,
                                GITHUB_RUN_ID="555", MLFLOW_CI_JUDGE_API_KEY="sk-judge-test")
        artifact = tmp_path / "artifact"
        artifact.mkdir()
        for name in ("result.json", "genai-answers.json"):
            (artifact / name).write_bytes((project.root / ".mlflow-ci" / name).read_bytes())
        published = project.cli("publish", "--from", str(artifact / "result.json"), "--config", str(base_config),
                                "--out", str(tmp_path / "published"), env=publisher)
        assert published.returncode == 0, published.stdout + published.stderr
        assert len(llm.requests) == 96 and {r["auth"] for r in llm.requests} == {"Bearer sk-judge-test"}
        judged = json.loads((tmp_path / "published" / "result.json").read_text())
        assert judged["genai"]["pending"] == [] and judged["genai"]["judged_by"] == "publisher"
        says = next(m for m in judged["metrics"] if m["name"] == "genai.says_when")
        assert (says["baseline"], says["candidate"]) == (0.75, 0.0) and says["ci_high"] < 0  # shipping names no days
        failed = {(c["metric"], c["rule"]) for c in judged["checks"] if c["passed"] is False}
        assert {("genai.says_when", "max_drop"), ("genai.says_when", "min"), ("genai.contains", "max_drop")} <= failed
        assert judged["verdict"] == "fail" and gh.check_runs[-1]["conclusion"] == "failure"
        assert "judged by the trusted publish job" in gh.check_runs[-1]["output"]["summary"] + gh.check_runs[-1]["output"].get("text", "")

        # no answers beside the result: the judge's rules fail, saying why
        (artifact / "genai-answers.json").unlink()
        unjudged = project.cli("publish", "--from", str(artifact / "result.json"), "--config", str(base_config),
                               "--out", str(tmp_path / "unjudged"), env=publisher)
        assert unjudged.returncode == 0, unjudged.stdout + unjudged.stderr
        failed = json.loads((tmp_path / "unjudged" / "result.json").read_text())["checks"]
        assert any(c["metric"] == "genai.says_when" and c["passed"] is False and "not judged: " in c["message"]
                   and "genai-answers.json" in c["message"] for c in failed)
        assert len(llm.requests) == 96

        # the app (the PR's code) never sees the key, whatever variable holds it, in a check that does judge
        git(project.root, "checkout", "-q", "main")
        project.write("mlflow-ci.yml", config.replace("predict_fn: faq_app:answer", "predict_fn: env_app:answer"))
        project.commit("an app that lists the keys it can see")
        seen = project.cli("check", "--no-publish", env=project.env(JUDGE_KEY="sk-judge-test", MLFLOW_CI_JUDGE_API_KEY="sk-2"))
        assert seen.returncode in (0, 1), seen.stdout + seen.stderr
        answers = json.loads((project.root / ".mlflow-ci" / "genai-candidate.outputs.json").read_text())
        assert len(answers) == 48 and not any("JUDGE" in a["text"] for a in answers), answers[:2]  # not even the names


def test_the_publisher_judges_with_the_base_commits_judge_even_when_the_pr_dropped_it(project, tmp_path):
    """A PR whose own configuration removes the judge scorer (or claims its judge passed) leaves nothing pending:
    the publisher still judges what the base commit judges, and without answers those rules fail."""
    from mlflow_ci.commands.judging import judge_deferred
    from mlflow_ci.config.loader import load_config
    from mlflow_ci.result import load_untrusted

    faq_project(project)
    base_config = tmp_path / "base" / "mlflow-ci.yml"
    base_config.parent.mkdir()
    base_config.write_text(judged_config("http://127.0.0.1:9/v1", 96) + "  genai.says_when: {min: 0.3}\n")
    checked = project.cli("check", "--no-publish", "--defer-judging")  # the PR's config has no judge at all
    assert checked.returncode == 0, checked.stdout + checked.stderr
    result = load_untrusted(project.root / ".mlflow-ci" / "result.json")
    assert result.genai.pending == [] and result.verdict == "pass"
    judged = judge_deferred(load_config(base_config), {"JUDGE_KEY": "k"}, open("/dev/null", "w"), result,
                            project.root / ".mlflow-ci", tmp_path / "work")
    says = [c for c in judged.checks if c.metric == "genai.says_when"]
    assert judged.verdict == "fail" and says and all(c.passed is False and c.message.startswith("not judged: ") for c in says)
    assert "genai-answers.json" in says[0].message  # the check wrote no answers: nothing to judge
