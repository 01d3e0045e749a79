"""A GenAI app whose prompt lives in the repository: check records the template it validated, promote
registers exactly that text in MLflow's Prompt Registry and moves @champion (the previous kept, restored
when the deploy hook fails), rollback follows the model version; the baseline can be the champion prompt
on the base commit's code, or the champion model (the app logged as an MLflow model)."""

from __future__ import annotations

import json

import pytest
from conftest import git

from mlflow_ci.tracking import MlflowTracker

APP = '''
from pathlib import Path

import mlflow.pyfunc

FAQ = {"hours": "We are open 9 to 5.", "refund": "Refunds take 14 days.", "shipping": "Shipping is free over 50 EUR.",
       "returns": "Returns within 30 days."}


def template():
    return (Path(__file__).parent / "prompts" / "faq.txt").read_text().strip()


def answer(topic, n):
    return template().format(text=FAQ[topic])


class FaqModel(mlflow.pyfunc.PythonModel):
    """The app as it was trained: its template kept inside the logged model."""
    def __init__(self, text):
        self.text = text

    def predict(self, context, model_input, params=None):
        return self.text.format(text=FAQ[model_input["topic"]])
'''
TRAIN = '''
import json, mlflow
import faq_app
with mlflow.start_run():
    mlflow.pyfunc.log_model(name="model", python_model=faq_app.FaqModel(faq_app.template()), code_paths=["faq_app.py"],
                            pip_requirements=["mlflow"])
json.dump({"ok": 1.0}, open("metrics.json", "w"))
'''
FACTS = {"hours": "9 to 5", "refund": "14 days", "shipping": "50 EUR", "returns": "30 days"}
CONFIG = """\
experiment: faq-bot
train:
  command: python train.py
  metrics_file: metrics.json
  inputs: ["*.py"]
genai:
  data: faq.jsonl
  predict_fn: faq_app:answer
  scorers: [contains, {{regex: "^Thanks"}}]
  prompts: [{{name: faq-answer, file: prompts/faq.txt}}]
  baseline: {baseline}
  resamples: 200
gate:
  genai.contains: {{min: 0.5}}
deploy:
  command: sh deploy.sh
"""


def faq_project(project, baseline="base_commit"):
    project.write("faq_app.py", APP)
    project.write("train.py", TRAIN)
    project.write("prompts/faq.txt", "{text}\n")
    project.write("deploy.sh", 'echo "deploy $MODEL_VERSION" >> deployed.txt\nexit "${DEPLOY_EXIT:-0}"\n')
    project.write(".gitignore", ".mlflow-ci/\nmetrics.json\ndeployed.txt\n")
    rows = [{"inputs": {"topic": topic, "n": n}, "expectations": {"expected_facts": [FACTS[topic]]}}
            for n in range(12) for topic in [list(FACTS)[n % 4]]]
    project.write("faq.jsonl", "\n".join(json.dumps(r) for r in rows) + "\n")
    project.write("mlflow-ci.yml", CONFIG.format(baseline=baseline))
    project.commit("a FAQ bot")


def merged_pr(project, branch: str, prompt: str):
    project.branch(branch)
    project.write("prompts/faq.txt", prompt + "\n")
    project.commit(f"prompt on {branch}")
    check = project.cli("check", "--no-publish", "--base-branch", "main")
    assert check.returncode == 0, check.stdout + check.stderr
    run_id = project.result()["candidate"]["run_id"]
    git(project.root, "checkout", "-q", "main")
    git(project.root, "merge", "-q", "--no-ff", branch, "-m", f"Merge {branch}")
    return run_id


def prompts(project):
    tracker = MlflowTracker(project.uri)
    return tracker.prompt_alias("faq-answer", "champion"), tracker.prompt_alias("faq-answer", "previous"), tracker


@pytest.mark.slow
def test_promote_registers_the_validated_prompt_moves_its_alias_and_rollback_follows(project):
    faq_project(project)
    first_run = merged_pr(project, "pr/thanks", "Thanks for asking! {text}")
    assert MlflowTracker(project.uri).get_run(first_run).tags["mlflow_ci.prompt.faq-answer"]  # the digest it validated
    promoted = project.cli("promote")
    assert promoted.returncode == 0, promoted.stdout + promoted.stderr
    champion, previous, tracker = prompts(project)
    assert (champion.version, champion.template, previous) == ("1", "Thanks for asking! {text}\n", None)
    assert champion.tags["mlflow_ci.run_id"] == first_run and champion.tags["mlflow_ci.digest"]
    assert tracker.alias_version("faq-bot", "champion").tags["mlflow_ci.prompt.faq-answer"] == "1"
    assert "Prompt faq-answer: version 1 is @champion" in (project.root / ".mlflow-ci" / "promote.md").read_text()
    again = project.cli("promote")  # a re-run: nothing registered twice
    assert again.returncode == 0 and len(tracker.prompt_versions("faq-answer")) == 1

    merged_pr(project, "pr/hello", "Hello! {text}")
    assert project.cli("promote").returncode == 0
    champion, previous, tracker = prompts(project)
    assert (champion.version, previous.version, champion.template) == ("2", "1", "Hello! {text}\n")
    moved = json.loads((project.root / ".mlflow-ci" / "promote.json").read_text())["prompts"]
    assert moved == [{"name": "faq-answer", "version": "2", "action": "promoted", "previous_version": "1"}]

    # the deploy hook fails: the model's and the prompt's aliases both go back
    third = merged_pr(project, "pr/hi", "Hi! {text}")
    failed = project.cli("promote", env=project.env(DEPLOY_EXIT="1"))
    assert failed.returncode == 3, failed.stdout + failed.stderr
    champion, previous, tracker = prompts(project)
    assert (champion.version, previous.version) == ("2", "1") and len(tracker.prompt_versions("faq-answer")) == 3

    # a template that differs from the one the run validated is refused before anything is written
    project.write("prompts/faq.txt", "Yo! {text}\n")
    project.commit("edited on main after the check")
    refused = project.cli("promote", "--run", third)
    assert refused.returncode == 1 and "prompt faq-answer: prompts/faq.txt at this commit is not what run" in refused.stderr
    assert "Traceback" not in refused.stderr and prompts(project)[0].version == "2"

    back = project.cli("rollback", "--reason", "tone")
    assert back.returncode == 0, back.stdout + back.stderr
    assert "prompt faq-answer@champion: version 2 -> 1" in back.stdout  # the version model version 1 was promoted with
    champion, previous, _ = prompts(project)
    assert (champion.version, previous.version) == ("1", "2")


@pytest.mark.slow
def test_the_baseline_is_the_champion_prompt_or_the_champion_model(project):
    faq_project(project, baseline="prompts")
    merged_pr(project, "pr/thanks", "Thanks for asking! {text}")
    assert project.cli("promote").returncode == 0
    merged_pr(project, "pr/hello", "Hello! {text}")
    assert project.cli("promote").returncode == 0
    assert project.cli("rollback").returncode == 0  # @champion: "Thanks ..." again, while main's file says "Hello!"

    project.branch("pr/greeting")
    project.write("prompts/faq.txt", "Greetings. {text}\n")
    project.commit("another greeting")
    checked = project.cli("check", "--no-publish", "--base-branch", "main")
    assert checked.returncode == 0, checked.stdout + checked.stderr
    g = project.result()["genai"]
    assert g["baseline"].endswith("with prompt faq-answer@champion (version 1)")
    regressed = [c for c in g["changed"] if c["scorer"] == "regex"]
    assert regressed and regressed[0]["baseline_output"].startswith("Thanks for asking!")  # the champion's text
    assert regressed[0]["candidate_output"].startswith("Greetings.")

    project.write("mlflow-ci.yml", CONFIG.format(baseline="model"))
    project.commit("compare with the champion model")
    checked = project.cli("check", "--no-publish", "--base-branch", "main")
    assert checked.returncode == 0, checked.stdout + checked.stderr
    g = project.result()["genai"]
    assert g["baseline"] == "the champion model faq-bot@champion (version 1)"
    regressed = [c for c in g["changed"] if c["scorer"] == "regex"]
    assert regressed[0]["baseline_output"] == "Thanks for asking! We are open 9 to 5."  # the logged model answered


@pytest.mark.slow
def test_an_app_without_a_model_promotes_and_rolls_back_its_prompts(project):
    faq_project(project)
    project.write("train.py", 'import json\njson.dump({"ok": 1.0}, open("metrics.json", "w"))\n')  # logs no model
    project.write("deploy.sh", 'echo "prompts $MLFLOW_CI_PROMPTS model [$MODEL_VERSION]" >> deployed.txt\n')
    project.commit("a GenAI app: no model")
    merged_pr(project, "pr/thanks", "Thanks for asking! {text}")
    promoted = project.cli("promote")
    assert promoted.returncode == 0, promoted.stdout + promoted.stderr
    assert "prompts @champion: promoted" in promoted.stdout and "prompt faq-answer version 1 @champion" in promoted.stdout
    champion, _, tracker = prompts(project)
    assert champion.version == "1" and tracker.alias_version("faq-bot", "champion") is None  # no model version invented
    assert tracker.client.search_registered_models() == []
    summary = json.loads((project.root / ".mlflow-ci" / "promote.json").read_text())
    assert (summary["version"], summary["model_uri"]) == ("", "")
    again = project.cli("promote")  # the deploy job run again: the same texts, said as such (no run is "champion")
    assert again.returncode == 0 and "prompts @champion: already champion: the same texts (validated by run" in again.stdout
    assert "the validated prompts already are @champion: nothing new to promote" in again.stdout and "already is run" not in again.stdout
    merged_pr(project, "pr/hello", "Hello! {text}")
    assert project.cli("promote").returncode == 0
    back = project.cli("rollback")
    assert back.returncode == 0, back.stdout + back.stderr
    assert "prompt faq-answer@champion: version 2 -> 1" in back.stdout
    deployed = (project.root / "deployed.txt").read_text().splitlines()
    assert deployed == ['prompts {"faq-answer": "1"} model []', 'prompts {"faq-answer": "2"} model []',
                        'prompts {"faq-answer": "1"} model []']


def test_a_run_without_a_model_and_without_prompts_is_not_registered(project):
    project.branch("pr/x")
    project.set_metrics(accuracy=0.95, rmse=4.0)
    project.commit("better")
    assert project.cli("check", "--no-publish", "--base-branch", "main").returncode == 0
    git(project.root, "checkout", "-q", "main")
    git(project.root, "merge", "-q", "--no-ff", "pr/x", "-m", "Merge pr/x")
    refused = project.cli("promote")
    assert refused.returncode == 2 and "logged no model named 'model' (promote.model_path): nothing to register" in refused.stderr
    assert MlflowTracker(project.uri).client.search_registered_models() == []
