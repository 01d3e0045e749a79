"""Which commit of mlflow-ci this is (``mlflow_ci.source``), and the pins ``init`` writes from it."""

from __future__ import annotations

import json
import re

from conftest import ROOT, git

from mlflow_ci import __version__
from mlflow_ci.commands.init import WORKFLOWS, pinned
from mlflow_ci.source import Source, built_from


def test_a_wheel_says_its_commit_a_checkout_asks_git_anything_else_says_nothing(tmp_path):
    package = tmp_path / "site-packages" / "mlflow_ci"
    package.mkdir(parents=True)
    assert built_from(package) is None  # neither a recorded commit nor a checkout of mlflow-ci
    (package / "BUILD_COMMIT").write_text(json.dumps({"commit": "a" * 40, "tag": "v0.2.0"}))
    assert built_from(package) == Source("a" * 40, "v0.2.0")
    (package / "BUILD_COMMIT").write_text(json.dumps({"commit": "not a sha", "tag": None}))
    assert built_from(package) is None
    if (ROOT / ".git").exists():  # this checkout, as an editable install sees it
        assert built_from(ROOT / "mlflow_ci").commit == git(ROOT, "rev-parse", "HEAD")


def test_init_pins_every_call_to_the_commit_with_an_honest_label():
    text = (WORKFLOWS / "mlflow-ci-pr.yml").read_text()
    release = pinned(text, Source("b" * 40, "v0.2.0"))
    assert re.findall(r"uses: mlflow-ci/mlflow-ci/\S+@(\S+) # (.+)$", release, re.M) == [("b" * 40, "v0.2.0")]
    untagged = pinned(text, Source("c" * 40, None))
    assert re.findall(r"@(\S+) # (.+)$", untagged.split("uses: mlflow-ci/mlflow-ci/", 1)[1], re.M)[0] == (
        "c" * 40, f"mlflow-ci {__version__}, untagged commit")
    assert pinned(text, None) == text  # nothing known: the packaged templates' pin stays
