"""`mlflow-ci verify MODEL_URI`: are a registered version's files still the bytes promote verified?

promote records the digest of the model it registered on the version (``mlflow_ci.model_digest``, see
:mod:`mlflow_ci.provenance`). The registered version points at files in the store that anyone with write
access to the experiment can overwrite after promote. ``verify`` downloads what ``models:/…`` resolves
to now, digests it and compares: serving and deploy scripts call it before they load a champion.
"""

from __future__ import annotations

import re
import tempfile
from dataclasses import dataclass
from pathlib import Path

from mlflow_ci.errors import NotValidatedError, UsageError
from mlflow_ci.provenance import TAG_DIGEST, model_digest

URI = re.compile(r"models:/(?P<model>[^/@]+)(?:@(?P<alias>[^/@]+)|/(?P<version>[0-9]+))")


@dataclass(frozen=True)
class Verified:
    model: str
    version: str
    digest: str


def verify_model(s, uri: str) -> Verified:
    """The version ``uri`` names, digested now; NotValidatedError (exit 1) when promote recorded no digest
    for it or its files changed since."""
    match = URI.fullmatch(uri.strip())
    if not match:
        raise UsageError(f"verify: {uri!r} is not models:/<name>@<alias> or models:/<name>/<version>")
    registry = s.registry()
    model = match["model"]
    info = registry.alias_version(model, match["alias"]) if match["alias"] else registry.version(model, match["version"])
    if info is None:
        raise UsageError(f"verify: {uri} does not exist in {s.tracking_uri}")
    digest, recorded = check_version(registry, info)
    if recorded is None:
        raise NotValidatedError(f"{model} version {info.version} has digest {digest}, but promote recorded none for it "
                                "(it was registered without a provenance record): nothing to verify against")
    return Verified(model, info.version, digest)


def check_version(registry, info) -> tuple[str, str | None]:
    """(the digest of what the version resolves to now, the digest promote recorded or None); NotValidatedError
    when both exist and differ."""
    with tempfile.TemporaryDirectory(prefix="mlflow-ci-verify-") as tmp:
        digest = model_digest(registry.download_version(info.model, info.version, Path(tmp)))
    return digest, as_promoted(info, digest)


def as_promoted(info, digest: str) -> str | None:
    """The digest promote recorded on version ``info`` (None: none recorded); NotValidatedError when the
    version's files now digest to something else."""
    recorded = info.tags.get(TAG_DIGEST) or None
    if recorded is not None and recorded != digest:
        raise NotValidatedError(f"{info.model} version {info.version} has digest {digest}, promote verified {recorded}: "
                                "its files changed after promotion; do not load it")
    return recorded
