"""Identity v3 response bodies (the token) as the Identity API reference defines them."""

from __future__ import annotations

from canopy.api.schemas.base import Body


class Named(Body):
    id: str
    name: str


class TokenUser(Body):
    id: str
    name: str
    domain: Named
    password_expires_at: str | None


class TokenProject(Body):
    id: str
    name: str
    domain: Named


class Endpoint(Body):
    id: str
    interface: str
    region: str
    region_id: str
    url: str


class Service(Body):
    id: str
    type: str
    name: str
    endpoints: list[Endpoint]


class Token(Body):
    methods: list[str]
    user: TokenUser
    audit_ids: list[str]
    expires_at: str
    issued_at: str
    project: TokenProject | None = None  # project-scoped tokens
    roles: list[Named] | None = None
    catalog: list[Service] | None = None
    is_domain: bool | None = None


class TokenOne(Body):
    token: Token


class IdentityFault(Body):
    code: int
    message: str
    title: str


class IdentityError(Body):
    error: IdentityFault
