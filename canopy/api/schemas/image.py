"""Image v2 response bodies as the Image API reference (Glance) defines them, and the error body."""

from __future__ import annotations

from pydantic import Field

from canopy.api.schemas.base import Body


class Image(Body):
    """An image: Glance's attributes; other keys are its properties (strings), as the image schema says."""

    id: str
    name: str | None
    status: str
    visibility: str
    protected: bool
    os_hidden: bool
    checksum: str | None
    os_hash_algo: str | None
    os_hash_value: str | None
    owner: str | None
    size: int | None
    virtual_size: int | None
    min_disk: int
    min_ram: int
    disk_format: str | None
    container_format: str | None
    tags: list[str]
    created_at: str
    updated_at: str
    self_: str = Field(alias="self")
    file: str
    schema_: str = Field(alias="schema")


class Images(Body):
    images: list[Image]
    schema_: str = Field(alias="schema")
    first: str
    next: str | None = None


class Member(Body):
    image_id: str
    member_id: str
    status: str
    created_at: str
    updated_at: str
    schema_: str = Field(alias="schema")


class Members(Body):
    members: list[Member]
    schema_: str = Field(alias="schema")


class VersionLink(Body):
    rel: str
    href: str


class Version(Body):
    id: str
    status: str
    links: list[VersionLink]


class Versions(Body):
    versions: list[Version]


class ImportMethods(Body):
    description: str
    type: str
    value: list[str]


class ImportInfo(Body):
    import_methods: ImportMethods = Field(alias="import-methods")


class Store(Body):
    id: str
    description: str
    default: bool | None = None


class StoresInfo(Body):
    stores: list[Store]


class JsonSchema(Body):
    """GET /v2/schemas/…: a named JSON schema."""

    name: str
    properties: dict[str, dict[str, object]]


class ImageError(Body):
    """Every error of the image API, as Glance's webob renders it in JSON ("404 Not Found", "Not Found", ...)."""

    code: str = Field(pattern=r"^[1-5][0-9][0-9] ")
    title: str
    message: str
