"""The identity administration of issue 16 item 7 on each database (SQLite, MariaDB, PostgreSQL): domains
with their deletion cascade, catalog writes, group grants and project tags run the same statements the
stack tests check on SQLite (the stack tests' own bodies, against the in-process cloud on each backend)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from tests.clouds import BACKENDS, ApiClient
from tests.stack import test_identity_catalog_admin as catalog
from tests.stack import test_identity_domains as domains

CASES: list[Callable[[ApiClient], Awaitable[None]]] = [
    domains.test_domain_admin_manages_only_its_own_domain,
    domains.test_disabling_a_domain_ends_its_tokens_and_delete_needs_it_disabled,
    catalog.test_catalog_changes_reach_new_tokens,
    catalog.test_group_grants_on_projects_and_group_lifecycle,
    catalog.test_project_tags,
    catalog.test_role_assignments_lists_system_grants,
]


@pytest.mark.parametrize("case", CASES, ids=[c.__name__ for c in CASES])
@pytest.mark.parametrize("backend_url", BACKENDS, indirect=True)
async def test_identity_administration_on_each_backend(stack: Any,
                                                       case: Callable[[ApiClient], Awaitable[None]]) -> None:
    await case(stack.api)
