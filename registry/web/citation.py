"""How to cite a release, in the one wording docs/methods.md section 7 gives (a test holds the
two together): every console page that shows pooled numbers, or lists releases, ends with it."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from registry import __version__
from registry.services.window.disclosure import Policy

REGISTRY_NAME = "HER2+ MBC prolonged-remission registry"


@dataclass(frozen=True)
class Citation:
    """A release's citation: which release, its cut date, the question (if any), the sentence."""

    release: int
    cut_on: str | None
    question: str | None
    text: str


def disclosure_words(policy: Policy) -> str:
    """The disclosure control in the citation's words: k and the methods applied."""
    methods = "cell-key perturbation and suppression" if policy.perturbation else "suppression"
    return f"k = {policy.min_cell_count}, {methods}"


def cite(release: int, cut_at: datetime | None, policy: Policy, question: str | None = None,
         version: str = __version__) -> Citation:
    """The citation of an answer (`question`: the API request that asks it, `GET /api/...`) or,
    without a question, of the release itself."""
    cut_on = cut_at.strftime("%Y-%m-%d") if cut_at else None
    text = f"{REGISTRY_NAME}, release {release}"
    if cut_on:
        text += f" (cut {cut_on})"
    if question:
        text += f", {question}"
    text += (f" (registry {version}); disclosure control: {disclosure_words(policy)}; "
             "methods as in docs/methods.md of that version.")
    return Citation(release, cut_on, question, text)


def cite_release(release: dict[str, Any] | None, policy: Policy,
                 question: str | None = None) -> Citation | None:
    """The citation of a release as the releases service lists it ({id, cut_at, ...})."""
    if release is None:
        return None
    return cite(release["id"], release.get("cut_at"), policy, question)
