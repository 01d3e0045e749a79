"""Provenance: the champion is byte-identical to the model that passed the gate.

The trusted publisher computes a content digest of the candidate's model (:func:`model_digest`) and
records it, with the run and model ids, in the check run it creates on the PR head
(:class:`Record`, kept in the check run's ``external_id`` and shown in its summary). On merge,
``promote`` reads that record back through the API, recomputes the digest of what it is about to
register and refuses a mismatch.

The digest is stable across stores and machines: it covers each file's path relative to the model's
root (POSIX separators, sorted) and the SHA-256 of its bytes, nothing else (no times, modes or
directory entries)::

    sha256( "<sha256 of file>  <relative path>\\n" for each file, sorted by path )

which is what ``find . -type f | sort | xargs sha256sum | sha256sum`` prints for the same tree.
Symbolic links are refused: what they point at is not part of the model. So are special files (a FIFO
would block the reader, a device is not content) and names holding a line break, another control
character or a backslash: with those refused, each file is exactly one line, so two different trees never
encode alike, and ``sha256sum`` prints every accepted name as is (it escapes backslashes and line breaks).

This module is plain Python (no MLflow, no HTTP): the GitHub wing stores records, the commands find
the files.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import stat
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path

from mlflow_ci.errors import UsageError

TAG_DIGEST = "mlflow_ci.model_digest"  # on a registered version: the digest of the bytes promote verified

PREFIX = "mlflow-ci/1"
DIGEST = re.compile(r"sha256:[0-9a-f]{64}")
RUN_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")
MODEL_ID = re.compile(r"m-[0-9a-f]{32}")
ARTIFACT = re.compile(r"(?P<run>[0-9]{1,20})/(?P<name>[A-Za-z0-9._-]{1,100})")
WORKFLOW_RUN = re.compile(r"[0-9]{1,20}")
MODEL_DIR = "model"  # where a model travels inside the result artifact
CHUNK = 1 << 20


class ProvenanceError(UsageError):
    """A model tree or artifact that cannot be digested or unpacked (exit 2)."""


def model_digest(root: Path) -> str:
    """``sha256:<hex>`` of the tree under ``root`` (see the module's docstring)."""
    if not root.is_dir():
        raise ProvenanceError(f"{root}: no model directory to digest")
    lines = []
    for path in sorted(_files(root), key=lambda p: p.relative_to(root).as_posix()):
        lines.append(f"{file_sha256(path)}  {path.relative_to(root).as_posix()}\n")
    if not lines:
        raise ProvenanceError(f"{root}: the model directory is empty")
    return "sha256:" + hashlib.sha256("".join(lines).encode("utf-8")).hexdigest()


_UNSAFE_NAME = re.compile(r"[\x00-\x1f\x7f\\]")


def _files(root: Path):
    for folder, dirs, names in os.walk(root, followlinks=False):
        for name in dirs + names:
            path = Path(folder) / name
            if _UNSAFE_NAME.search(name):
                raise ProvenanceError(f"{str(path)!r}: a name with a control character or a backslash in the model "
                                      "directory; refusing to digest it")
            mode = path.lstat().st_mode
            if stat.S_ISLNK(mode):
                raise ProvenanceError(f"{path}: a symbolic link in the model directory; refusing to digest it")
            if name in names and not stat.S_ISREG(mode):
                raise ProvenanceError(f"{path}: not a regular file (a FIFO, socket or device) in the model directory; "
                                      "refusing to digest it")
        yield from (Path(folder) / name for name in names)


def file_digest(path: Path, algorithm: str = "sha256", *, header: bytes = b"") -> str:
    """The hex digest of ``header`` followed by the file's bytes, read in chunks."""
    digest = hashlib.new(algorithm)
    digest.update(header)
    with path.open("rb") as handle:
        while chunk := handle.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def file_sha256(path: Path) -> str:
    return file_digest(path)


def logged_model_id(root: Path) -> str | None:
    """The MLflow 3 LoggedModel id an ``MLmodel`` file names (``model_id: m-…``), if well-formed."""
    try:
        text = (root / "MLmodel").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return None
    found = re.search(r"^model_id: *'?(m-[0-9a-f]{32})'? *$", text, re.MULTILINE)
    return found.group(1) if found else None


@dataclass(frozen=True)
class Record:
    """What the trusted publisher vouches for: this run's model had this digest when it was gated."""
    run_id: str
    digest: str
    model_id: str | None = None
    artifact: str | None = None  # "<workflow run id>/<artifact name>" when the model travelled as an artifact
    workflow: str | None = None  # the workflow run that gated it, when no artifact names it (a single-job check)

    def __post_init__(self) -> None:
        if not RUN_ID.fullmatch(self.run_id):
            raise ProvenanceError(f"provenance: run id {self.run_id[:70]!r} is not an MLflow run id")
        if not DIGEST.fullmatch(self.digest):
            raise ProvenanceError("provenance: the digest is not sha256:<64 hex digits>")
        if self.model_id is not None and not MODEL_ID.fullmatch(self.model_id):
            raise ProvenanceError(f"provenance: model id {self.model_id[:70]!r} is not an MLflow model id")
        if self.artifact is not None and not ARTIFACT.fullmatch(self.artifact):
            raise ProvenanceError(f"provenance: artifact {self.artifact[:120]!r} is not <workflow run id>/<name>")
        if self.workflow is not None and not WORKFLOW_RUN.fullmatch(self.workflow):
            raise ProvenanceError(f"provenance: workflow run {self.workflow[:30]!r} is not a workflow run id")

    @property
    def workflow_run(self) -> int | None:
        """The workflow run that gated the model: the artifact's, else the one recorded for a single-job check."""
        if self.artifact:
            return int(self.artifact.split("/", 1)[0])
        return int(self.workflow) if self.workflow else None

    @property
    def artifact_name(self) -> str | None:
        return self.artifact.split("/", 1)[1] if self.artifact else None

    def external_id(self) -> str:
        """The check run's ``external_id``: one line, only characters the formats above allow."""
        parts = [PREFIX, f"run={self.run_id}", f"digest={self.digest}"]
        if self.model_id:
            parts.append(f"model={self.model_id}")
        if self.artifact:
            parts.append(f"artifact={self.artifact}")
        elif self.workflow:
            parts.append(f"workflow={self.workflow}")
        return ";".join(parts)

    @classmethod
    def parse(cls, text: object) -> "Record | None":
        """The record in a check run's ``external_id``; None for anything else (never raises)."""
        if not isinstance(text, str) or not text.startswith(PREFIX + ";") or len(text) > 400:
            return None
        fields: dict[str, str] = {}
        for part in text.split(";")[1:]:
            key, sep, value = part.partition("=")
            if not sep or key in fields or key not in ("run", "digest", "model", "artifact", "workflow"):
                return None
            fields[key] = value
        if "run" not in fields or "digest" not in fields:
            return None
        try:
            return cls(fields["run"], fields["digest"], fields.get("model"), fields.get("artifact"), fields.get("workflow"))
        except ProvenanceError:
            return None

    def markdown(self) -> str:
        """The summary section a reviewer (and an auditor) reads in the check run."""
        lines = [
            "### Provenance",
            "",
            f"- MLflow run: `{self.run_id}`",
            f"- Model digest: `{self.digest}`",
        ]
        if self.model_id:
            lines.append(f"- Logged model: `{self.model_id}`")
        if self.artifact:
            lines.append(f"- Model artifact: `{self.artifact_name}` of workflow run {self.workflow_run}")
        elif self.workflow:
            lines.append(f"- Gated in workflow run {self.workflow}")
        lines += ["", "_Promotion on merge registers this model only if its digest is unchanged._"]
        return "\n".join(lines) + "\n"


def export_model(source: Path, dst: Path) -> Path:
    """Copy a downloaded model tree to ``dst`` (replaced), refusing symbolic links."""
    model_digest(source)  # refuses links and empty trees before anything is written
    if dst.exists():
        shutil.rmtree(dst)
    shutil.copytree(source, dst, symlinks=True)
    return dst


def extract_zip(archive: Path, dst: Path, *, max_bytes: int, max_files: int = 100_000) -> Path:
    """Unpack an untrusted zip into the empty or new folder ``dst``, refusing absolute paths, ``..``,
    links and special files, duplicate names, more than ``max_files`` entries or ``max_bytes`` bytes
    (counted while writing, not taken from the archive's headers)."""
    dst.mkdir(parents=True, exist_ok=True)
    written = 0
    seen: set[str] = set()
    try:
        with zipfile.ZipFile(archive) as zf:
            entries = zf.infolist()
            if len(entries) > max_files:
                raise ProvenanceError(f"{archive.name}: {len(entries):,} entries, more than the {max_files:,} allowed")
            for info in entries:
                name = _safe_name(archive, info)
                if name is None:
                    continue
                if name in seen:
                    raise ProvenanceError(f"{archive.name}: {name!r} appears twice")
                seen.add(name)
                target = dst / name
                target.parent.mkdir(parents=True, exist_ok=True)
                with zf.open(info) as src, target.open("xb") as out:
                    while chunk := src.read(CHUNK):
                        written += len(chunk)
                        if written > max_bytes:
                            raise ProvenanceError(f"{archive.name}: more than {max_bytes:,} bytes once unpacked")
                        out.write(chunk)
    except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError, NotImplementedError, zlib.error) as exc:
        why = "corrupt compressed data" if isinstance(exc, zlib.error) else type(exc).__name__
        raise ProvenanceError(f"{archive.name}: not a readable zip archive ({why})") from None
    return dst


def _safe_name(archive: Path, info: zipfile.ZipInfo) -> str | None:
    """The entry's relative path; None for a directory entry; refusal for anything unsafe."""
    name = info.filename
    kind = stat.S_IFMT(info.external_attr >> 16)  # 0 when the archiver recorded permissions only
    if info.is_dir():
        return None
    if kind and kind != stat.S_IFREG:
        raise ProvenanceError(f"{archive.name}: {name[:80]!r} is a link or special file")
    parts = name.split("/")
    if (not name or name.startswith("/") or "\\" in name or "\0" in name or re.match(r"^[A-Za-z]:", name)
            or any(p in ("", ".", "..") for p in parts)):
        raise ProvenanceError(f"{archive.name}: unsafe path {name[:80]!r}")
    return name
