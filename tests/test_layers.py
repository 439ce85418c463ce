"""The layering of style.md holds: api, web -> services -> models -> core; site -> core.

Every `import` of every module (also those inside functions) is read from the source, so a
lower layer importing a higher one fails here, and the record core and the site tools are
imported in a fresh interpreter to prove that no server package comes with them.
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "registry"
# Rank of each part of the package: a module may import its own rank and lower ones only.
RANKS = {
    "registry.core": 0,
    "registry.db": 1, "registry.db_sqlite": 1, "registry.config": 1, "registry.errors": 1,
    "registry.models": 1,
    "registry.services": 2,
    "registry.schemas": 3, "registry.auth": 3, "registry.permissions": 2,
    "registry.observability": 3, "registry.ratelimit": 3, "registry.api": 3,
    "registry.web": 3, "registry.cli": 3, "registry": 3,
}
SITE = "registry.site"
# Side by side on top of services (style.md): the API and the console never import each other.
SIDE_BY_SIDE = ("registry.api", "registry.web")
# (numpy is not listed: openpyxl imports it when it happens to be installed; the fresh-venv
# test of tests/test_site_tools.py shows the site tools do not bring it.)
SERVER_PACKAGES = ("flask", "flask_smorest", "flask_limiter", "flask_swagger_ui", "werkzeug",
                   "sqlalchemy", "alembic", "psycopg", "gunicorn", "scipy",
                   "prometheus_client", "pythonjsonlogger")


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path) -> set[str]:
    """Every module a file imports, by absolute name."""
    found = set()
    package = _module_name(path).rsplit(".", 1)[0] if path.name != "__init__.py" \
        else _module_name(path)
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                base = f"{parent}.{base}" if base else parent
            found.add(base)
            found.update(f"{base}.{alias.name}" for alias in node.names)
    return found


def _part(module: str) -> str | None:
    """The layer a registry module belongs to (its longest matching prefix)."""
    if module == SITE or module.startswith(SITE + "."):
        return SITE
    matches = [name for name in RANKS if module == name or module.startswith(name + ".")]
    return max(matches, key=len) if matches else None


def _known(module: str) -> bool:
    """Whether `module` names a module or package of the source tree."""
    path = ROOT.joinpath(*module.split("."))
    return path.with_suffix(".py").exists() or (path / "__init__.py").exists()


MODULES = sorted(PACKAGE.rglob("*.py"))


@pytest.mark.parametrize("path", MODULES, ids=lambda path: _module_name(path))
def test_no_module_imports_a_higher_layer(path):
    me = _module_name(path)
    mine = _part(me)
    for target in _imports(path):
        if not (target == "registry" or target.startswith("registry.")) or not _known(target):
            continue  # a name imported from a module, or a third-party package
        theirs = _part(target)
        if mine == SITE:
            assert theirs in (SITE, "registry.core"), f"{me} (site) imports {target}"
        elif theirs == SITE:
            pytest.fail(f"{me} imports the site tools ({target})")
        elif target != "registry":  # `from registry import x` names the submodule x
            assert RANKS[theirs] <= RANKS[mine], f"{me} imports {target}, a higher layer"
            assert not (mine in SIDE_BY_SIDE and theirs in SIDE_BY_SIDE and mine != theirs), \
                f"{me} imports {target}: the API and the console stand side by side"


@pytest.mark.parametrize("path", [path for path in MODULES
                                  if _part(_module_name(path)) in ("registry.core", SITE)],
                         ids=lambda path: _module_name(path))
def test_core_and_site_name_no_server_package(path):
    imported = {name.split(".")[0] for name in _imports(path)}
    assert not imported & set(SERVER_PACKAGES), _module_name(path)


def test_importing_core_and_site_loads_no_server_package():
    """In a fresh interpreter: every core and site module, then what else got loaded."""
    modules = [_module_name(path) for path in MODULES
               if _part(_module_name(path)) in ("registry.core", SITE)]
    script = ("import importlib, json, sys\n"
              f"for name in {modules!r}:\n    importlib.import_module(name)\n"
              "print(json.dumps(sorted({m.split('.')[0] for m in sys.modules})))")
    result = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True,
                            text=True, check=True)
    loaded = set(json.loads(result.stdout))
    assert "registry" in loaded
    assert not loaded & set(SERVER_PACKAGES), sorted(loaded & set(SERVER_PACKAGES))


def test_the_rank_table_knows_every_module():
    assert all(_part(_module_name(path)) is not None for path in MODULES)


# Where a field of the record may be named by hand (README, "Adding a record field"): its
# declaration, the rule table, the derived fields that read it, the demo data, and the REDCap
# layout (the first field of each instrument, the visit date).
NAMED_BY_HAND = {"registry/core/record.py", "registry/core/rules.py", "registry/core/derived.py",
                 "registry/services/intake/synthetic.py", "registry/core/redcap_dictionary.py",
                 "registry/core/deidentify.py"}


def test_record_fields_are_named_by_hand_in_few_files():
    from registry.core.record import SUBMITTED_FIELDS

    for path in MODULES:
        relative = str(path.relative_to(ROOT))
        if relative in NAMED_BY_HAND:
            continue
        source = path.read_text()
        named = [field for field in SUBMITTED_FIELDS if f'"{field}"' in source]
        assert not named, f"{relative} names record fields by hand: {named}"


# --- the API and the console (style.md): views reach data only through services ---------------

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


@pytest.mark.parametrize("path", sorted([*(PACKAGE / "web").glob("*.py"),
                                         *(PACKAGE / "api").glob("*.py")]),
                         ids=lambda p: f"{p.parent.name}/{p.name}")
def test_views_reach_data_only_through_services(path):
    forbidden = ("sqlalchemy", "registry.db", "registry.models")
    bad = sorted(m for m in imported_modules(path) if m.startswith(forbidden))
    assert bad == [], f"{path.name} imports {bad}: call a service instead"


@pytest.mark.parametrize("path", sorted((PACKAGE / "services").glob("*.py")), ids=lambda p: p.name)
def test_services_never_read_the_request(path):
    bad = sorted(m for m in imported_modules(path)
                 if m.startswith(("flask", "registry.api", "registry.web")))
    assert bad == [], f"{path.name} imports {bad}: pass what it needs as arguments"
