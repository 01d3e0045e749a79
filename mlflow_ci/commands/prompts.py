"""The app's prompts (``genai.prompts``) in MLflow's Prompt Registry, with the provenance and rollback of
models.

``check`` records each template's digest on the candidate run (``mlflow_ci.prompt.<name>``). On merge,
``promote`` reads each template at the merged commit, refuses one whose digest is not what the
validated run recorded, registers it (unless the champion already has that text, or a re-run already
registered it for this run), keeps the current champion under ``previous`` and moves ``champion`` to
it; the model version records the prompt versions promoted with it, so ``rollback --to`` restores
them as they were. When the deploy hook fails, the prompts' aliases go back with the model's.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Mapping

from mlflow_ci.config.models import Config, PromptConfig
from mlflow_ci.errors import NotValidatedError, UsageError
from mlflow_ci.tracking import PromptInfo, RunSnapshot

TAG_PROMPT = "mlflow_ci.prompt."  # + name: on a run, the template's digest; on a model version, the prompt version
TAG_DIGEST = "mlflow_ci.digest"  # on a prompt version: its template's digest


@dataclass(frozen=True)
class PromptMove:
    name: str
    version: str  # the champion now
    action: str  # promoted | unchanged
    before: PromptInfo | None  # the champion before
    earlier: PromptInfo | None  # the previous alias before


def digest(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def template(cfg: Config, prompt: PromptConfig) -> str:
    path = cfg.resolve(prompt.file)
    try:
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"{cfg.path}: genai.prompts: {prompt.name}: cannot read {prompt.file} ({exc.__class__.__name__})") from None


def run_tags(cfg: Config) -> dict[str, str]:
    """What check records on the candidate run: each template's digest."""
    prompts = cfg.genai.prompts if cfg.genai else ()
    return {TAG_PROMPT + p.name: digest(template(cfg, p)) for p in prompts}


def validated_templates(cfg: Config, run: RunSnapshot) -> dict[str, str]:
    """Each prompt's template at this commit, refused unless it is the text ``run`` was validated with."""
    prompts = cfg.genai.prompts if cfg.genai else ()
    texts = {p.name: template(cfg, p) for p in prompts}
    for p in prompts:
        validated = run.tags.get(TAG_PROMPT + p.name)
        if validated != digest(texts[p.name]):
            why = "recorded no digest for it" if validated is None else "validated another text"
            raise NotValidatedError(f"prompt {p.name}: {p.file} at this commit is not what run {run.run_id} validated (the check {why}); "
                                    "refusing to promote", hint="re-run the PR check on the merged commit, then promote")
    return texts


def promote_prompts(cfg: Config, tracker, run: RunSnapshot, texts: Mapping[str, str], tags: Mapping[str, str]) -> list[PromptMove]:
    """Each validated template registered (once) and made the champion; the champion it replaces kept as previous."""
    prompts = cfg.genai.prompts if cfg.genai else ()
    alias, prev_alias = cfg.champion_alias, cfg.promote.previous_alias
    moves = []
    for p in prompts:
        text = texts[p.name]
        before, earlier = tracker.prompt_alias(p.name, alias), tracker.prompt_alias(p.name, prev_alias)
        if before is not None and before.template == text:
            moves.append(PromptMove(p.name, before.version, "unchanged", before, earlier))
            continue
        version = next((v for v in tracker.prompt_versions(p.name)
                        if v.tags.get("mlflow_ci.run_id") == run.run_id and v.template == text), None)
        if version is None:  # not registered by an earlier attempt of this promote
            version = tracker.register_prompt(p.name, text, message=f"mlflow-ci: {p.file} as validated by run {run.run_id}",
                                              tags={**tags, TAG_DIGEST: digest(text)})
        if before is not None:
            tracker.set_prompt_alias(p.name, prev_alias, before.version)
        tracker.set_prompt_alias(p.name, alias, version.version)
        moves.append(PromptMove(p.name, version.version, "promoted", before, earlier))
    return moves


def restore_prompts(cfg: Config, tracker, moves: list[PromptMove]) -> None:
    """The prompts' aliases as they were before promote moved them."""
    alias, prev_alias = cfg.champion_alias, cfg.promote.previous_alias
    for move in moves:
        if move.action != "promoted":
            continue
        for name, was in ((alias, move.before), (prev_alias, move.earlier)):
            if was is not None:
                tracker.set_prompt_alias(move.name, name, was.version)
            else:
                tracker.delete_prompt_alias(move.name, name)


def rollback_prompts(cfg: Config, tracker, recorded: Mapping[str, str]) -> list[PromptMove]:
    """Each prompt back to the version recorded on the model version rolled back to, else to its previous alias."""
    alias, prev_alias = cfg.champion_alias, cfg.promote.previous_alias
    moves = []
    for p in cfg.genai.prompts if cfg.genai else ():
        before, earlier = tracker.prompt_alias(p.name, alias), tracker.prompt_alias(p.name, prev_alias)
        wanted = recorded.get(TAG_PROMPT + p.name)
        target = tracker.prompt_version(p.name, wanted) if wanted else earlier
        if target is None or (before is not None and target.version == before.version):
            moves.append(PromptMove(p.name, before.version if before else "", "unchanged", before, earlier))
            continue
        tracker.set_prompt_alias(p.name, alias, target.version)
        if before is not None:
            tracker.set_prompt_alias(p.name, prev_alias, before.version)
        moves.append(PromptMove(p.name, target.version, "promoted", before, earlier))
    return moves
