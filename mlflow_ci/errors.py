"""The one exception hierarchy of mlflow-ci and its mapping to exit codes.

Every expected failure is raised as a subclass of :class:`MlflowCiError`; the CLI turns it into a
one-line message on stderr and the documented exit code (see PRODUCT.md / docs/exit-codes.md).
"""

from __future__ import annotations

import re

EXIT_OK = 0
EXIT_GATE_FAILED = 1
EXIT_USAGE = 2
EXIT_TRAINING = 3
EXIT_SERVICE = 4


def first_line(text: str, limit: int = 300) -> str:
    lines = str(text).strip().splitlines()
    return lines[0][:limit] if lines else ""


_LINE_BREAKS = re.compile(r"[\r\n\x0b\x0c\x1c-\x1e\x85\u2028\u2029]+")


def printable(text: str) -> str:
    """One line that is safe to print in a CI log: line breaks become spaces (text from a pull request
    cannot start a line of its own), a leading ``::`` is defused (no workflow command), and so is ``##[``
    anywhere in the line (the runner still obeys its legacy command form, ``##[set-output name=x;]v``,
    wherever it appears in a line)."""
    line = _LINE_BREAKS.sub(" ", str(text)).replace("##[", "##\u200b[")
    return re.sub(r"^(\s*):(?=:)", "\\1:\u200b", line)


class MlflowCiError(Exception):
    """Base class: an expected failure with a message meant for the user."""
    exit_code = EXIT_USAGE

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def lines(self) -> list[str]:
        """The lines printed to stderr for this error."""
        out = [printable(f"error: {self.message}")]
        if self.hint:
            out.append(printable(f"hint: {self.hint}"))
        return out


class UsageError(MlflowCiError):
    """Bad command-line usage or inconsistent inputs (exit 2)."""
    exit_code = EXIT_USAGE


class ConfigError(MlflowCiError):
    """One or more problems in the configuration file (exit 2).

    ``problems`` holds one self-contained line per problem, each naming file, line, key path and what
    was expected.
    """

    exit_code = EXIT_USAGE

    def __init__(self, problems: list[str], *, path: str) -> None:
        self.problems = list(problems)
        self.path = path
        count = len(self.problems)
        noun = "problem" if count == 1 else "problems"
        super().__init__(f"{path}: {count} configuration {noun}")

    def lines(self) -> list[str]:
        return [printable(f"error: {p}") for p in self.problems] + [printable(f"{self.message}; nothing was run")]


class TrainingError(MlflowCiError):
    """The training command failed, timed out or produced unusable output (exit 3)."""
    exit_code = EXIT_TRAINING


class ServiceError(MlflowCiError):
    """A service (MLflow tracking server, GitHub API) failed after retries (exit 4)."""
    exit_code = EXIT_SERVICE


class NotValidatedError(MlflowCiError):
    """Promotion refused: no run passed the gate for the merged commit, or what would be promoted, deployed
    or compared with is not the model that was verified (exit 1, like a failed gate)."""
    exit_code = EXIT_GATE_FAILED


class DeployError(MlflowCiError):
    """The deploy hook failed or timed out; the alias was rolled back (exit 3)."""
    exit_code = EXIT_TRAINING
