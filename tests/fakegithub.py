"""A fake GitHub REST API on 127.0.0.1 that behaves the way GitHub documents it.

Endpoints: issue comments (list/create/update/delete), check runs (create/update/list for a ref),
commit statuses, pulls (list/get/for a commit), workflow runs and their artifacts (list, download
through a redirect to storage that never sees the token).

Shaped by GitHub's own OpenAPI description (:mod:`openapi`): every request must be a documented
operation whose JSON body conforms (else 422, and the test fails at exit); every answer is built on the
operation's documented example and must conform to its schema (else the test fails at exit), so
comments have authors, check runs an ``app``, statuses API URLs, errors a ``documentation_url``. The
documented limits are enforced (summary and text 65,535 characters, 50 annotations per request,
annotation messages 64 KB, comment bodies 65,536). Also: Bearer auth (401), per_page capped at 100
with Link pagination, 403 for forbidden endpoints, and injected faults: any status with headers (rate
limits, 5xx) or a dropped connection. Every request is logged as (method, path, query).
"""

from __future__ import annotations

import hashlib
import json
import re
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import openapi

from mlflow_ci.loopback import LoopbackServer

# The GitHub event payloads of the product (a copy of ../shared/fixtures/github-events).
EVENTS = Path(__file__).resolve().parent / "fixtures" / "github-events"
TOKEN = "ghs_secret_token_value"


class FakeClock:
    def __init__(self, now: float = 1_800_000_000.0) -> None:
        self.now = now
        self.sleeps: list[float] = []

    def time(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(round(seconds, 3))
        self.now += seconds


DOCS = "https://docs.github.com/rest"
FORBIDDEN = {"message": "Resource not accessible by integration", "documentation_url": DOCS}
NOT_FOUND = {"message": "Not Found", "documentation_url": DOCS}
TOO_LONG = {"message": "Validation Failed", "documentation_url": DOCS, "errors": [
    {"resource": "IssueComment", "code": "unprocessable", "field": "data", "message": "Body is too long (maximum is 65536 characters)"}]}
ANNOTATION_MESSAGE_BYTES = 64 * 1024


def invalid(message: str) -> dict:
    return {"message": "Validation Failed", "errors": [{"resource": "Request", "code": "invalid", "message": message}],
            "documentation_url": DOCS}


RESULT_ARTIFACT = ("result.json", "report.md", "model/")  # what the PR workflow uploads from .mlflow-ci/


def zip_artifact(folder: Path, keep: tuple[str, ...] | None = None) -> bytes:
    """An artifact as GitHub serves it: the uploaded tree (or the paths under ``keep``) as a zip archive."""
    import io
    import zipfile

    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as zf:
        for path in sorted(folder.rglob("*")):
            rel = path.relative_to(folder).as_posix()
            if path.is_file() and (keep is None or any(rel == k or (k.endswith("/") and rel.startswith(k)) for k in keep)):
                zf.write(path, rel)
    return buffer.getvalue()


def overlay(base, fields):
    """``base`` (a documented example) with ``fields`` written over it, nested objects merged."""
    if not isinstance(base, dict) or not isinstance(fields, dict):
        return fields
    out = dict(base)
    for key, value in fields.items():
        out[key] = overlay(base.get(key), value) if isinstance(value, dict) and isinstance(base.get(key), dict) else value
    return out


@dataclass
class Fault:
    route: str  # route name, e.g. "create_comment"; "*" for any
    status: int = 500
    headers: dict = field(default_factory=dict)
    body: dict = field(default_factory=lambda: {"message": "Server Error"})
    drop: bool = False  # close the connection without answering
    after: bool = False  # drop only after the request took effect (a lost response)


ROUTES = [
    ("GET", r"/repos/(?P<repo>[^/]+/[^/]+)/issues/(?P<pr>\d+)/comments", "list_comments"),
    ("POST", r"/repos/(?P<repo>[^/]+/[^/]+)/issues/(?P<pr>\d+)/comments", "create_comment"),
    ("PATCH", r"/repos/(?P<repo>[^/]+/[^/]+)/issues/comments/(?P<id>\d+)", "update_comment"),
    ("DELETE", r"/repos/(?P<repo>[^/]+/[^/]+)/issues/comments/(?P<id>\d+)", "delete_comment"),
    ("POST", r"/repos/(?P<repo>[^/]+/[^/]+)/check-runs", "create_check_run"),
    ("PATCH", r"/repos/(?P<repo>[^/]+/[^/]+)/check-runs/(?P<id>\d+)", "update_check_run"),
    ("POST", r"/repos/(?P<repo>[^/]+/[^/]+)/statuses/(?P<sha>[0-9a-f]{40})", "create_status"),
    ("GET", r"/repos/(?P<repo>[^/]+/[^/]+)/pulls", "list_pulls"),
    ("GET", r"/repos/(?P<repo>[^/]+/[^/]+)/commits/(?P<sha>[0-9a-f]{40})/pulls", "commit_pulls"),
    ("GET", r"/repos/(?P<repo>[^/]+/[^/]+)/commits/(?P<sha>[0-9a-f]{40})/check-runs", "list_check_runs"),
    ("GET", r"/repos/(?P<repo>[^/]+/[^/]+)/actions/runs/(?P<run>\d+)/artifacts", "list_artifacts"),
    ("GET", r"/repos/(?P<repo>[^/]+/[^/]+)/actions/runs", "list_workflow_runs"),
    ("GET", r"/repos/(?P<repo>[^/]+/[^/]+)/actions/runs/(?P<run>\d+)/approvals", "run_approvals"),
    ("GET", r"/repos/(?P<repo>[^/]+/[^/]+)/actions/runs/(?P<run>\d+)", "get_workflow_run"),
    ("GET", r"/repos/(?P<repo>[^/]+/[^/]+)/pulls/(?P<number>\d+)/files", "pull_files"),
    ("GET", r"/repos/(?P<repo>[^/]+/[^/]+)/pulls/(?P<number>\d+)", "get_pull"),
    ("GET", r"/repos/(?P<repo>[^/]+/[^/]+)/actions/artifacts/(?P<id>\d+)/zip", "download_artifact"),
]
BLOB = re.compile(r"/_blob/(?P<id>\d+)")  # the storage an artifact download redirects to (no token there)


class FakeGitHub(LoopbackServer):
    def __init__(self, token: str = "ghs_secret_token_value", prefix: str = "", identity: str = "github-actions[bot]") -> None:
        self.token = token
        self.identity = identity  # who the token writes as: comments' author, check runs' app, statuses' creator
        self.prefix = prefix  # e.g. "/api/v3" for GitHub Enterprise
        self.comments: dict[int, list[dict]] = {}
        self.check_runs: list[dict] = []
        self.statuses: list[dict] = []
        self.pulls: list[dict] = []
        self.artifacts: list[dict] = []
        self.workflow_runs: list[dict] = []
        self.pull_files: dict[int, list[dict]] = {}  # PR number -> the files it changes ({"filename", "status", …})
        self.approvals: dict[int, list[dict]] = {}  # workflow run id -> deployment reviews  # {"id", "head_sha", "event", "status", "head_repository": {...}}  # {"id", "name", "run", "expired", "data": zip bytes}
        self.blob_requests: list[dict] = []  # headers of requests to the artifact storage
        self.forbidden: set[str] = set()
        self.faults: list[Fault] = []
        self.log: list[tuple[str, str, dict]] = []
        self.violations: list[str] = []  # departures from GitHub's OpenAPI description, by us or by the client
        self._next_id = 1000
        self._lock = threading.Lock()
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):  # quiet
                pass

            def _handle(self):
                fake._dispatch(self)

            do_GET = do_POST = do_PATCH = do_DELETE = _handle

        self._serve(Handler, name="fake-github")

    # -- lifecycle ---------------------------------------------------------------------------------
    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}{self.prefix}"

    def __exit__(self, *exc) -> None:
        super().__exit__(*exc)
        if self.violations and exc[0] is None:
            raise AssertionError("GitHub's OpenAPI description was not respected:\n" + "\n".join(self.violations))

    # -- helpers for tests -------------------------------------------------------------------------
    def new_id(self) -> int:
        with self._lock:
            self._next_id += 1
            return self._next_id

    def add_comments(self, pr: int, bodies: list[str], user: str = "someone") -> list[dict]:
        made = []
        for body in bodies:
            cid = self.new_id()
            made.append({"id": cid, "body": body, "html_url": f"https://github.test/c/{cid}",
                         "user": {"login": user, "type": "Bot" if user.endswith("[bot]") else "User"}})
        self.comments.setdefault(pr, []).extend(made)
        return made

    def add_artifact(self, run: int, name: str, data: bytes, *, expired: bool = False) -> dict:
        artifact = {"id": self.new_id(), "name": name, "run": run, "expired": expired, "data": data}
        self.artifacts.append(artifact)
        return artifact

    def add_check_run(self, sha: str, name: str, *, conclusion: str = "success", app: str = "github-actions", **fields) -> dict:
        """A check run written by someone else (another app, an older run) for the tests to plant."""
        run = {"id": self.new_id(), "name": name, "head_sha": sha, "status": "completed", "conclusion": conclusion,
               "app": {"slug": app}, "html_url": "https://github.test/runs/planted", **fields}
        self.check_runs.append(run)
        return run

    def add_pr_run(self, run_id: int, head_sha: str, pr: int | None, *, path: str = ".github/workflows/mlflow-ci.yml",
                   calls: str | None = None, conclusion: str = "success", event: str = "pull_request", **fields) -> dict:
        """A workflow run as GitHub describes it: ``path`` the workflow file that ran, ``calls`` the reusable
        workflow it called as written (``owner/repo/.github/workflows/x.yml@ref``), the PR it ran for."""
        run = {"id": run_id, "head_sha": head_sha, "event": event, "status": "completed", "conclusion": conclusion,
               "path": path, "referenced_workflows": [{"path": calls, "sha": calls.rsplit("@", 1)[1]}] if calls else [],
               "pull_requests": [{"id": pr, "number": pr, "url": f"{self.url}/repos/o/r/pulls/{pr}",
                                  "head": {"ref": "pr", "sha": head_sha, "repo": {"id": 1, "url": "https://github.test/o/r", "name": "r"}},
                                  "base": {"ref": "main", "sha": head_sha, "repo": {"id": 1, "url": "https://github.test/o/r", "name": "r"}}}]
               if pr else [], **fields}
        self.workflow_runs = [r for r in self.workflow_runs if r.get("id") != run_id] + [run]
        return run

    def requests(self) -> list[str]:
        """The log as 'METHOD route-ish path?page=N' strings, for exact sequence assertions."""
        out = []
        for method, path, query in self.log:
            q = "&".join(f"{k}={v}" for k, v in sorted(query.items()) if k in ("page", "per_page", "head", "state"))
            out.append(f"{method} {path}" + (f"?{q}" if q else ""))
        return out

    # -- request handling --------------------------------------------------------------------------
    def _dispatch(self, h: BaseHTTPRequestHandler) -> None:
        parts = urlsplit(h.path)
        path = parts.path
        query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
        length = int(h.headers.get("Content-Length") or 0)
        raw = h.rfile.read(length) if length else b""
        self.log.append((h.command, path, query))
        blob = BLOB.fullmatch(path)
        if blob:
            return self._blob(h, int(blob["id"]))
        if self.prefix:
            if not path.startswith(self.prefix + "/"):
                return self._send(h, 404, NOT_FOUND)
            path = path[len(self.prefix):]
        route, params = self._route(h.command, path)
        documented = openapi.operation(h.command, path)
        if documented is None:
            self.violations.append(f"{h.command} {path}: not an operation GitHub documents")
        if route is None:
            return self._send(h, 404, NOT_FOUND)
        # GitHub takes both schemes ("Authorization: Bearer" or "token"); octokit, as in download-artifact, sends "token"
        if h.headers.get("Authorization") not in (f"Bearer {self.token}", f"token {self.token}"):
            return self._send(h, 401, {"message": "Bad credentials", "documentation_url": DOCS})
        fault = self._take_fault(route)
        if fault and not fault.after:
            if fault.drop:
                return self._drop(h)
            return self._send(h, fault.status, fault.body, fault.headers)
        if route in self.forbidden:
            return self._send(h, 403, FORBIDDEN)
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            return self._send(h, 400, {"message": "Problems parsing JSON", "documentation_url": DOCS})
        template = documented[0] if documented else None
        problems = openapi.request_problems(h.command, template, body) if template else []
        if problems:
            self.violations.extend(f"request {h.command} {template}: {problem}" for problem in problems)
            return self._send(h, 422, invalid("; ".join(problems)))
        status, payload, headers = getattr(self, "_" + route)(params, query, body or {})
        if template:
            payload = self._shape(h.command.lower(), template, status, payload)
            self.violations.extend(f"answer {status} to {h.command} {template}: {problem}"
                                   for problem in openapi.response_problems(h.command, template, status, payload))
        if fault and fault.after:
            return self._drop(h)
        self._send(h, status, payload, headers)

    def _route(self, method: str, path: str):
        for m, pattern, name in ROUTES:
            if m == method:
                match = re.fullmatch(pattern, path)
                if match:
                    return name, match.groupdict()
        return None, {}

    def _take_fault(self, route: str) -> Fault | None:
        with self._lock:
            for i, fault in enumerate(self.faults):
                if fault.route in (route, "*"):
                    return self.faults.pop(i)
        return None

    def _send(self, h, status: int, payload, headers: dict | None = None) -> None:
        data = b"" if payload is None else json.dumps(payload).encode()
        h.send_response(status)
        h.send_header("Content-Type", "application/json; charset=utf-8")
        h.send_header("Content-Length", str(len(data)))
        h.send_header("x-ratelimit-limit", "5000")
        for key, value in (headers or {}).items():
            h.send_header(key, str(value))
        h.end_headers()
        h.wfile.write(data)

    def _drop(self, h) -> None:
        h.close_connection = True
        try:
            h.connection.shutdown(2)
        except OSError:
            pass

    # -- endpoints ---------------------------------------------------------------------------------
    def _list_comments(self, p, q, body):
        items = self.comments.get(int(p["pr"]), [])
        return self._page(items, q, f"/repos/{p['repo']}/issues/{p['pr']}/comments")

    def _list_pulls(self, p, q, body):
        items = [pr for pr in self.pulls if q.get("state", "open") == pr.get("state", "open")]
        if "head" in q:
            items = [pr for pr in items if pr.get("head", {}).get("label") == q["head"]]
        return self._page(items, q, f"/repos/{p['repo']}/pulls")

    def _commit_pulls(self, p, q, body):
        items = [pr for pr in self.pulls if p["sha"] in (pr.get("merge_commit_sha"), pr.get("head", {}).get("sha"))]
        return self._page(items, q, f"/repos/{p['repo']}/commits/{p['sha']}/pulls")

    def _page(self, items, q, path):
        per_page = min(int(q.get("per_page", 30)), 100)
        page = int(q.get("page", 1))
        chunk = items[(page - 1) * per_page : page * per_page]
        last = max((len(items) + per_page - 1) // per_page, 1)
        links = []
        base = f"{self.url}{path}?per_page={per_page}"
        for k in ("state", "head"):
            if k in q:
                base += f"&{k}={q[k]}"
        if page < last:
            links.append(f'<{base}&page={page + 1}>; rel="next"')
            links.append(f'<{base}&page={last}>; rel="last"')
        if page > 1:
            links.append(f'<{base}&page=1>; rel="first"')
            links.append(f'<{base}&page={page - 1}>; rel="prev"')
        return 200, chunk, ({"Link": ", ".join(links)} if links else {})

    def _create_comment(self, p, q, body):
        text = body.get("body")
        if not isinstance(text, str) or len(text) > 65536:
            return 422, TOO_LONG, {}
        made = self.add_comments(int(p["pr"]), [text], user=self.identity)[0]
        return 201, made, {}

    def _find_comment(self, cid: int):
        for items in self.comments.values():
            for c in items:
                if c["id"] == cid:
                    return items, c
        return None, None

    def _update_comment(self, p, q, body):
        items, comment = self._find_comment(int(p["id"]))
        if comment is None:
            return 404, NOT_FOUND, {}
        text = body.get("body")
        if not isinstance(text, str) or len(text) > 65536:
            return 422, TOO_LONG, {}
        comment["body"] = text
        return 200, comment, {}

    def _delete_comment(self, p, q, body):
        items, comment = self._find_comment(int(p["id"]))
        if comment is None:
            return 404, NOT_FOUND, {}
        items.remove(comment)
        return 204, None, {}

    def _list_check_runs(self, p, q, body):
        runs = [r for r in self.check_runs if r["head_sha"] == p["sha"] and q.get("check_name") in (None, r["name"])]
        status, page, headers = self._page(runs, q, f"/repos/{p['repo']}/commits/{p['sha']}/check-runs")
        return status, {"total_count": len(runs), "check_runs": [self._check_run_view(r, p["repo"]) for r in page]}, headers

    def _get_pull(self, p, q, body):
        pull = next((pr for pr in self.pulls if pr.get("number") == int(p["number"])), None)
        return (200, pull, {}) if pull else (404, NOT_FOUND, {})

    def _list_workflow_runs(self, p, q, body):
        runs = [r for r in self.workflow_runs
                if all(q.get(k) in (None, r.get(k)) for k in ("head_sha", "event", "status"))]
        status, page, headers = self._page(runs, q, f"/repos/{p['repo']}/actions/runs")
        return status, {"total_count": len(runs), "workflow_runs": page}, headers

    def _get_workflow_run(self, p, q, body):
        run = next((r for r in self.workflow_runs if r.get("id") == int(p["run"])), None)
        return (200, run, {}) if run else (404, NOT_FOUND, {})

    def _pull_files(self, p, q, body):
        files = [{"sha": "0" * 40, "status": "modified", "additions": 1, "deletions": 1, "changes": 2, **f}
                 for f in self.pull_files.get(int(p["number"]), [])]
        return self._page(files, q, f"/repos/{p['repo']}/pulls/{p['number']}/files")

    def _run_approvals(self, p, q, body):
        return 200, self.approvals.get(int(p["run"]), []), {}

    def _list_artifacts(self, p, q, body):
        found = [a for a in self.artifacts if a["run"] == int(p["run"]) and q.get("name") in (None, a["name"])]
        # the zip's size and SHA-256, which download-artifact checks the download against (else the example's)
        shown = [{k: v for k, v in a.items() if k not in ("data", "run")}
                 | {"size_in_bytes": len(a["data"]), "digest": f"sha256:{hashlib.sha256(a['data']).hexdigest()}"} for a in found]
        status, page, headers = self._page(shown, q, f"/repos/{p['repo']}/actions/runs/{p['run']}/artifacts")
        return status, {"total_count": len(found), "artifacts": page}, headers

    def _download_artifact(self, p, q, body):
        artifact = next((a for a in self.artifacts if a["id"] == int(p["id"])), None)
        if artifact is None:
            return 404, NOT_FOUND, {}
        if artifact["expired"]:
            return 410, {"message": "Artifact has expired", "documentation_url": DOCS}, {}
        host = self.url[: len(self.url) - len(self.prefix)] if self.prefix else self.url
        return 302, None, {"Location": f"{host}/_blob/{artifact['id']}"}

    def _blob(self, h, artifact_id: int) -> None:
        self.blob_requests.append(dict(h.headers))
        artifact = next((a for a in self.artifacts if a["id"] == artifact_id), None)
        data = artifact["data"] if artifact else b""
        h.send_response(200 if artifact else 404)
        h.send_header("Content-Type", "application/zip")
        h.send_header("Content-Length", str(len(data)))
        h.end_headers()
        h.wfile.write(data)

    def _create_check_run(self, p, q, body):
        anns = body.get("output", {}).get("annotations", [])
        if any(len(a.get("message", "").encode()) > ANNOTATION_MESSAGE_BYTES for a in anns):
            return 422, invalid("an annotation message is over 64 KB"), {}
        cid = self.new_id()
        run = {**body, "id": cid, "html_url": f"https://github.test/runs/{cid}", "annotations": list(anns),
               "app": {"slug": self.identity.removesuffix("[bot]")}}
        self.check_runs.append(run)
        return 201, self._check_run_view(run, p["repo"]), {}

    def _update_check_run(self, p, q, body):
        run = next((r for r in self.check_runs if r["id"] == int(p["id"])), None)
        if run is None:
            return 404, NOT_FOUND, {}
        anns = body.get("output", {}).get("annotations", [])
        if any(len(a.get("message", "").encode()) > ANNOTATION_MESSAGE_BYTES for a in anns):
            return 422, invalid("an annotation message is over 64 KB"), {}
        run["annotations"].extend(anns)
        return 200, self._check_run_view(run, p["repo"]), {}

    def _check_run_view(self, run: dict, repo: str) -> dict:
        """A stored check run as GitHub answers it: the output's counts, not its annotations."""
        output = run.get("output") or {}
        view = {k: v for k, v in run.items() if k != "annotations"}
        view["url"] = f"{self.url}/repos/{repo}/check-runs/{run['id']}"
        view["output"] = {"title": output.get("title"), "summary": output.get("summary"), "text": output.get("text"),
                          "annotations_count": len(run.get("annotations", [])),
                          "annotations_url": f"{view['url']}/annotations"}
        return view

    def _create_status(self, p, q, body):
        status = {**body, "sha": p["sha"], "url": f"{self.url}/repos/{p['repo']}/statuses/{p['sha']}",
                  "id": self.new_id(), "creator": {"login": self.identity, "type": "Bot"}}
        self.statuses.append(status)
        return 201, status, {}

    # -- GitHub's shapes -------------------------------------------------------------------------
    def _shape(self, method: str, template: str, status: int, payload):
        """An answer built on the operation's documented example, with our objects written over it."""
        if payload is None or status >= 300:
            return payload
        example = openapi.example(method, template, status)
        if isinstance(payload, list):
            return [self._fix(overlay(example[0], item)) for item in payload]
        for key in ("check_runs", "workflow_runs", "artifacts"):
            if key in payload:
                return {**payload, key: [self._fix(overlay(example[key][0], item)) for item in payload[key]]}
        return self._fix(overlay(example, payload))

    @staticmethod
    def _fix(item: dict) -> dict:
        if "requested_teams" in item:  # the pull request examples list a team without its required 'type'
            item["requested_teams"] = []
        return item
