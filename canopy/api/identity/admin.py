"""Identity v3 administration: domains, projects, users, roles and role assignments."""

from __future__ import annotations

from starlette.routing import BaseRoute

ROUTES: list[BaseRoute] = []
