"""The direction of the layers (style.md): api/ and web/ -> services/ -> models/; views never
touch the database session, services never read the HTTP request."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "registry"


def imported_modules(path: Path) -> set[str]:
    """Every module a Python file imports (absolute names)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return found


@pytest.mark.parametrize("path", sorted((PACKAGE / "web").glob("*.py")), ids=lambda p: p.name)
def test_console_views_reach_data_only_through_services(path):
    forbidden = ("sqlalchemy", "registry.db", "registry.models", "registry.api")
    bad = sorted(m for m in imported_modules(path) if m.startswith(forbidden))
    assert bad == [], f"{path.name} imports {bad}: call a service instead"


@pytest.mark.parametrize("path", sorted((PACKAGE / "services").glob("*.py")), ids=lambda p: p.name)
def test_services_never_read_the_request(path):
    bad = sorted(m for m in imported_modules(path)
                 if m.startswith(("flask", "registry.api", "registry.web")))
    assert bad == [], f"{path.name} imports {bad}: pass what it needs as arguments"
