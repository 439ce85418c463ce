"""One permission table (registry/permissions.py): endpoints declare actions, services check the
same table, and no role is spelled out on an endpoint."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

from registry.core.vocabulary import ROLES
from registry.errors import Forbidden
from registry.permissions import PERMISSIONS, Action, allowed
from registry.services.intake import batches, records
from registry.services.window import aggregates
from registry.services.access.tokens import Caller

ROOT = Path(__file__).resolve().parents[1]


def test_every_action_has_a_row_and_names_known_roles():
    assert set(PERMISSIONS) == set(Action)
    assert all(roles and roles <= set(ROLES) for roles in PERMISSIONS.values())


def test_endpoints_declare_actions_never_roles():
    for path in sorted([*(ROOT / "registry" / "api").glob("*.py"),
                        *(ROOT / "registry" / "web").glob("*.py")]):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "requires":
                assert len(node.args) == 1 and isinstance(node.args[0], ast.Attribute) \
                    and node.args[0].value.id == "Action", f"{path.name}:{node.lineno}"


# Where a role may be named: the table, the vocabulary, and the services that issue tokens of a
# role (a submitter's token belongs to a site) and make the demo data.
NAMES_ROLES = {"permissions.py", "vocabulary.py", "tokens.py", "synthetic.py"}


def test_no_role_is_spelled_out_beside_the_table():
    quoted_role = re.compile(r"""["'](%s)["']""" % "|".join(ROLES))
    package = ROOT / "registry"
    for path in sorted([*package.glob("api/*.py"), *package.glob("web/*.py"),
                        *package.glob("web/templates/console/*.html"),
                        *package.glob("services/*.py")]):
        if path.name in NAMES_ROLES:
            continue
        found = quoted_role.findall(path.read_text())
        assert not found, f"{path.relative_to(ROOT)} names {found}: check an Action instead"


def test_every_api_view_declares_an_action_or_is_public(app):
    for endpoint, view in app.view_functions.items():
        rule = next(rule for rule in app.url_map.iter_rules() if rule.endpoint == endpoint)
        if not rule.rule.startswith("/api/v1") or endpoint.startswith("api-docs"):
            continue
        assert isinstance(getattr(view, "_registry_action", None), Action) or \
            getattr(view, "_registry_public", False), endpoint


SERVICE_CALLS = [
    (Action.WRITE_RECORDS, lambda caller: records.put_record(caller, "abcdefghijklmnop", {})),
    (Action.WRITE_RECORDS, lambda caller: records.withdraw_record(caller, "abcdefghijklmnop")),
    (Action.WRITE_RECORDS, lambda caller: batches.submit_batch(
        caller, [], dry_run=True, atomic=False, max_batch=10)),
    (Action.READ_RECORDS, lambda caller: records.list_records(caller, limit=1)),
    (Action.READ_RECORDS, lambda caller: records.get_record(caller, "abcdefghijklmnop")),
    (Action.QUERY_AGGREGATES, lambda caller: aggregates.list_dimensions(caller)),
    (Action.READ_QUERY_LOG, lambda caller: aggregates.read_query_log(caller, 1, None)),
]


@pytest.mark.parametrize("role", ROLES)
@pytest.mark.parametrize("action, call", SERVICE_CALLS)
def test_services_refuse_roles_the_table_does_not_allow(app, role, action, call):
    caller = Caller(token_id=None, role=role, site_id=None)
    with app.app_context():
        if allowed(role, action):
            try:
                call(caller)
            except Forbidden:  # pragma: no cover - the assertion below names the case
                pytest.fail(f"{role} refused {action}")
            except Exception:  # noqa: BLE001 - past the permission check; other rules apply
                pass
        else:
            with pytest.raises(Forbidden):
                call(caller)
