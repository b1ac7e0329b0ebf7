"""Uploading a snapshot through the Image API with the agent's service credential (issue 6)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

from canopy.agent.disk.imageclient import ImageApiClient, ImageUnavailable

PATCH = "application/openstack-images-v2.1-json-patch"


class ImageUploader:
    """Sets a queued image's formats and streams its data (the record was made by the Compute API)."""

    def __init__(self, client: ImageApiClient) -> None:
        self.client = client

    async def upload(self, image_id: str, path: Path, disk_format: str) -> None:
        """Give queued image `image_id` its disk format and the file's bytes."""
        ops = [{"op": "replace", "path": "/disk_format", "value": disk_format},
               {"op": "replace", "path": "/container_format", "value": "bare"}]
        for renew in (False, True):
            headers = {**await self.client._headers(renew), "Content-Type": PATCH}  # its token, renewed on 401
            resp = await self.client.http.patch(f"/image/v2/images/{image_id}", json=ops, headers=headers)
            if resp.status_code != 401:
                break
        if resp.status_code != 200:
            raise ImageUnavailable(f"image {image_id}: setting its format answered {resp.status_code}: "
                                   f"{resp.text[:200]}")
        headers = {**await self.client._headers(), "Content-Type": "application/octet-stream"}
        resp = await self.client.http.put(f"/image/v2/images/{image_id}/file", content=_read(path),
                                          headers=headers, timeout=3600)
        if resp.status_code != 204:
            raise ImageUnavailable(f"image {image_id}: the upload answered {resp.status_code}: {resp.text[:200]}")


async def _read(path: Path, chunk: int = 1 << 20) -> AsyncIterator[bytes]:
    with path.open("rb") as f:
        while data := f.read(chunk):
            yield data
