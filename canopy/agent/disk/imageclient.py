"""Images through the Image API with a service credential: agents never touch the database.

    client = ImageApiClient("http://api:8774", "canopy-agent", "secret", project="service")
    meta = await client.get_meta(image_id)          # the Image v2 record (properties are top-level keys)
    async for chunk in client.download(image_id): ...
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any, Protocol

import httpx

from canopy.config import Settings


class ImageUnavailable(Exception):
    """The Image API refused or could not serve an image."""


class ImageSource(Protocol):
    """Where a host's image cache gets images from."""

    async def get_meta(self, image_id: str) -> dict[str, Any]: ...

    def download(self, image_id: str) -> AsyncIterator[bytes]: ...


class ImageApiClient:
    """An Image v2 client that logs in with a service user and renews its token when it expires."""

    def __init__(self, base_url: str, username: str, password: str, *, project: str, domain: str = "default",
                 transport: httpx.AsyncBaseTransport | None = None, timeout_s: float = 60.0) -> None:
        self.http = httpx.AsyncClient(base_url=base_url.rstrip("/"), transport=transport, timeout=timeout_s)
        self._auth = {"auth": {"identity": {"methods": ["password"], "password": {"user": {
            "name": username, "domain": {"id": domain}, "password": password}}},
            "scope": {"project": {"name": project, "domain": {"id": domain}}}}}
        self._token: str | None = None

    async def close(self) -> None:
        await self.http.aclose()

    async def _login(self) -> str:
        resp = await self.http.post("/identity/v3/auth/tokens", json=self._auth)
        if resp.status_code != 201:
            raise ImageUnavailable(f"the image service credential was refused ({resp.status_code}): "
                                   f"{resp.text[:200]}")
        self._token = resp.headers["x-subject-token"]
        return self._token

    async def _headers(self, renew: bool = False) -> dict[str, str]:
        token = self._token if self._token and not renew else await self._login()
        return {"X-Auth-Token": token}

    async def get_meta(self, image_id: str) -> dict[str, Any]:
        """The image record; ImageUnavailable when it is missing or not visible."""
        resp = await self.http.get(f"/image/v2/images/{image_id}", headers=await self._headers())
        if resp.status_code == 401:
            resp = await self.http.get(f"/image/v2/images/{image_id}", headers=await self._headers(renew=True))
        if resp.status_code != 200:
            raise ImageUnavailable(f"image {image_id}: the Image API answered {resp.status_code}")
        return resp.json()

    async def download(self, image_id: str) -> AsyncIterator[bytes]:
        """The image's data in chunks."""
        for renew in (False, True):
            async with self.http.stream("GET", f"/image/v2/images/{image_id}/file",
                                        headers=await self._headers(renew)) as resp:
                if resp.status_code == 401 and not renew:
                    continue
                if resp.status_code != 200:
                    raise ImageUnavailable(f"image {image_id}: download answered {resp.status_code}")
                async for chunk in resp.aiter_bytes(1 << 20):
                    yield chunk
                return


def service_image_client(settings: Settings, transport: httpx.AsyncBaseTransport | None = None) -> ImageApiClient:
    """The Image API as an agent reaches it: `[libvirt] image_api_url` (default: the api's public URL) with the
    service credential; in-process with `transport`."""
    lv = settings.libvirt
    return ImageApiClient(lv.image_api_url or settings.api.public_url, lv.service_user, lv.service_password,
                          project=lv.service_project, transport=transport)
