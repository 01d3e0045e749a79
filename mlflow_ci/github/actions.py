"""GitHub Actions I/O: step outputs, job summary, annotations and masking.

Files come from the injected environment (``GITHUB_OUTPUT``, ``GITHUB_STEP_SUMMARY``); workflow
commands go to an injected stream. Values are escaped the way the runner parses them.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, TextIO

# GitHub rejects a step summary over 1 MiB; keep a margin for what other steps append.
SUMMARY_LIMIT = 1024 * 1024 - 16 * 1024


def _escape_data(text: str) -> str:
    return text.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")


def _escape_property(text: str) -> str:
    return _escape_data(text).replace(":", "%3A").replace(",", "%2C")


@dataclass(frozen=True)
class Annotation:
    level: str  # "error" | "warning" | "notice"
    message: str
    title: str | None = None
    file: str | None = None
    line: int | None = None


class ActionsIO:
    """Writes to the files and stream of the current Actions step (no-ops outside Actions)."""
    def __init__(self, env: Mapping[str, str], stream: TextIO) -> None:
        self.env = env
        self.stream = stream

    @property
    def active(self) -> bool:
        return self.env.get("GITHUB_ACTIONS") == "true"

    def mask(self, secret: str | None) -> None:
        if secret and self.active:
            self.stream.write(f"::add-mask::{_escape_data(secret)}\n")

    def annotate(self, note: Annotation) -> None:
        if not self.active:
            return
        props = []
        if note.file:
            props.append(f"file={_escape_property(note.file)}")
        if note.line:
            props.append(f"line={note.line}")
        if note.title:
            props.append(f"title={_escape_property(note.title)}")
        head = f"::{note.level}" + (" " + ",".join(props) if props else "")
        self.stream.write(f"{head}::{_escape_data(note.message)}\n")

    def set_outputs(self, values: Mapping[str, str]) -> bool:
        """Append outputs to ``$GITHUB_OUTPUT`` with a random heredoc delimiter (multi-line safe)."""
        path = self.env.get("GITHUB_OUTPUT")
        if not path:
            return False
        with Path(path).open("a", encoding="utf-8") as handle:
            for name, value in values.items():
                text = "" if value is None else str(value)
                delimiter = f"ghadelimiter_{secrets.token_hex(8)}"
                handle.write(f"{name}<<{delimiter}\n{text}\n{delimiter}\n")
        return True

    def add_summary(self, markdown: str, *, full_report_hint: str = "") -> bool:
        """Append to ``$GITHUB_STEP_SUMMARY``, shortened to stay under GitHub's 1 MiB limit."""
        path = self.env.get("GITHUB_STEP_SUMMARY")
        if not path:
            return False
        target = Path(path)
        used = target.stat().st_size if target.exists() else 0
        room = max(SUMMARY_LIMIT - used, 0)
        text = truncate_utf8(markdown, room, note=f"\n\n_Summary shortened to fit GitHub's 1 MiB limit. {full_report_hint}_\n")
        with target.open("a", encoding="utf-8") as handle:
            handle.write(text if text.endswith("\n") else text + "\n")
        return True


def truncate_utf8(text: str, limit_bytes: int, *, note: str) -> str:
    """``text`` if it fits in ``limit_bytes`` of UTF-8, else a prefix plus ``note`` that fits."""
    data = text.encode("utf-8")
    if len(data) <= limit_bytes:
        return text
    keep = max(limit_bytes - len(note.encode("utf-8")), 0)
    return data[:keep].decode("utf-8", errors="ignore") + note


def truncate_chars(text: str, limit: int, *, note: str) -> str:
    """``text`` if it has at most ``limit`` characters, else a prefix plus ``note`` that fits.

    Cuts at a line boundary where possible so a Markdown table is not left half-written.
    """
    if len(text) <= limit:
        return text
    keep = max(limit - len(note), 0)
    head = text[:keep]
    cut = head.rfind("\n")
    if cut > keep // 2:
        head = head[: cut + 1]
    return head + note
