"""A host's cache of base images, one file per image ID, verified by checksum before first use.

    cache = ImageCache(Path("/var/lib/canopy/_base"), client)
    base = await cache.get(image_id)          # downloads once, even for many concurrent boots
    removed = cache.evict(in_use={...})       # unused bases: by age, then by free space

Each base has a sidecar `<id>.json` with the verified checksum, format, size and last use. A download
whose checksum differs from the Image API's, or a file that is not what its disk_format claims (or a
qcow2 with a backing file, which could read any file on the host), fails with ImageCorrupt and leaves
nothing behind.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from canopy.agent.disk import qemuimg
from canopy.agent.disk.imageclient import ImageSource, ImageUnavailable

log = logging.getLogger("canopy.agent.disk")

# Formats qemu-img must confirm; kernels and ramdisks (aki/ari) are only checksummed.
DISK_FORMATS = ("qcow2", "raw")


class ImageCorrupt(Exception):
    """The image's data is not what the Image API says it is."""


@dataclass(frozen=True, slots=True)
class CachedImage:
    """A verified base image on this host."""

    image_id: str
    path: Path
    disk_format: str
    size: int
    virtual_size: int
    properties: dict[str, Any]


class ImageCache:
    """Base images of one host; concurrent requests for one image share one download."""

    def __init__(self, root: Path, source: ImageSource, *, max_age_s: float = 86400.0,
                 min_free_bytes: int = 0, max_image_bytes: int = 64 << 30,
                 clock: Callable[[], float] = time.time) -> None:
        self.root = root
        self.source = source
        self.max_age_s = max_age_s
        self.min_free_bytes = min_free_bytes
        self.max_image_bytes = max_image_bytes
        self.clock = clock
        self.downloads = 0  # how many times data was fetched (tests check sharing)
        self._inflight: dict[str, asyncio.Task[CachedImage]] = {}
        root.mkdir(parents=True, exist_ok=True)

    def _sidecar(self, image_id: str) -> Path:
        return self.root / f"{image_id}.json"

    async def get(self, image_id: str) -> CachedImage:
        """The verified base of an image, downloading it if this host has none."""
        task = self._inflight.get(image_id)
        if task is None:
            task = asyncio.create_task(self._get(image_id), name=f"image-{image_id}")
            self._inflight[image_id] = task
            task.add_done_callback(lambda _t: self._inflight.pop(image_id, None))
        # shield: one boot giving up must not cancel the download the others wait for
        return await asyncio.shield(task)

    async def _get(self, image_id: str) -> CachedImage:
        meta = await self.source.get_meta(image_id)
        if meta.get("status") != "active":
            raise ImageUnavailable(f"image {image_id} is {meta.get('status')}, not active")
        cached = self._load(image_id, meta)
        if cached is None:
            cached = await self._download(image_id, meta)
        self._touch(image_id)
        return cached

    def _load(self, image_id: str, meta: dict[str, Any]) -> CachedImage | None:
        """The cached base, if its record matches the image's current checksum."""
        side, path = self._sidecar(image_id), self.root / image_id
        if not side.exists() or not path.exists():
            return None
        rec = json.loads(side.read_text())
        if rec.get("sha512") != meta.get("os_hash_value") or path.stat().st_size != rec.get("size"):
            return None
        return CachedImage(image_id, path, rec["disk_format"], rec["size"], rec["virtual_size"],
                           _properties(meta))

    async def _download(self, image_id: str, meta: dict[str, Any]) -> CachedImage:
        dest = self.root / image_id
        tmp = self.root / f".{image_id}.part"
        self.downloads += 1
        t0 = time.monotonic()
        try:
            size, md5, sha512 = await self._fetch(image_id, tmp)
            _verify_checksums(image_id, meta, size, md5, sha512)
            disk_format = meta.get("disk_format") or "raw"
            virtual = await _verify_format(image_id, tmp, disk_format, size)
            tmp.chmod(0o444)  # a base is never written: overlays only read it
            os.replace(tmp, dest)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        rec = {"sha512": sha512, "size": size, "disk_format": disk_format, "virtual_size": virtual,
               "fetched_at": self.clock(), "last_used": self.clock()}
        self._sidecar(image_id).write_text(json.dumps(rec))
        log.info("image %s cached: %d bytes in %.2fs", image_id, size, time.monotonic() - t0)
        return CachedImage(image_id, dest, disk_format, size, virtual, _properties(meta))

    async def _fetch(self, image_id: str, tmp: Path) -> tuple[int, str, str]:
        md5, sha512, size = hashlib.md5(usedforsecurity=False), hashlib.sha512(), 0
        with tmp.open("wb") as f:
            async for chunk in self.source.download(image_id):
                size += len(chunk)
                if size > self.max_image_bytes:
                    raise ImageCorrupt(f"image {image_id} is larger than the {self.max_image_bytes} bytes "
                                       "this host accepts")
                md5.update(chunk)
                sha512.update(chunk)
                await asyncio.to_thread(f.write, chunk)
        return size, md5.hexdigest(), sha512.hexdigest()

    def _touch(self, image_id: str) -> None:
        side = self._sidecar(image_id)
        rec = json.loads(side.read_text())
        rec["last_used"] = self.clock()
        side.write_text(json.dumps(rec))

    def cached(self) -> dict[str, dict[str, Any]]:
        """The bases on this host and their records."""
        out = {}
        for side in self.root.glob("*.json"):
            try:
                out[side.stem] = json.loads(side.read_text())
            except (OSError, ValueError):
                continue
        return out

    def evict(self, in_use: set[str]) -> list[str]:
        """Remove unused bases unused for longer than max_age, then the oldest until min_free is met."""
        now, removed = self.clock(), []
        unused = sorted(((rec.get("last_used", 0.0), image_id) for image_id, rec in self.cached().items()
                         if image_id not in in_use and image_id not in self._inflight))
        for last_used, image_id in unused:
            too_old = now - last_used > self.max_age_s
            short = self.min_free_bytes and shutil.disk_usage(self.root).free < self.min_free_bytes
            if too_old or short:
                self._remove(image_id)
                removed.append(image_id)
        return removed

    def _remove(self, image_id: str) -> None:
        (self.root / image_id).unlink(missing_ok=True)
        self._sidecar(image_id).unlink(missing_ok=True)
        log.info("image %s evicted from the cache", image_id)


def _properties(meta: dict[str, Any]) -> dict[str, Any]:
    """Glance v2 puts properties at the top level: everything that is not a base attribute."""
    base = {"id", "name", "status", "visibility", "protected", "checksum", "os_hash_algo", "os_hash_value",
            "size", "virtual_size", "min_disk", "min_ram", "owner", "tags", "created_at", "updated_at",
            "disk_format", "container_format", "self", "file", "schema", "os_hidden", "direct_url", "locations"}
    return {k: v for k, v in meta.items() if k not in base}


def _verify_checksums(image_id: str, meta: dict[str, Any], size: int, md5: str, sha512: str) -> None:
    expected_size = meta.get("size")
    if expected_size is not None and size != expected_size:
        raise ImageCorrupt(f"image {image_id} is truncated or padded: got {size} bytes, the Image API "
                           f"records {expected_size}")
    if meta.get("os_hash_algo") == "sha512" and meta.get("os_hash_value"):
        if sha512 != meta["os_hash_value"]:
            raise ImageCorrupt(f"image {image_id} failed its sha512 check: the data is corrupt")
    elif meta.get("checksum"):
        if md5 != meta["checksum"]:
            raise ImageCorrupt(f"image {image_id} failed its md5 check: the data is corrupt")
    else:
        raise ImageCorrupt(f"image {image_id} has no checksum to verify its data against")


async def _verify_format(image_id: str, path: Path, disk_format: str, size: int) -> int:
    """Check a disk image is what it claims; its virtual size."""
    if disk_format not in DISK_FORMATS:
        return size
    try:
        found = await qemuimg.info(path)
    except qemuimg.DiskError as exc:
        raise ImageCorrupt(f"image {image_id} cannot be read as a disk: {exc}") from exc
    if found.get("format") != disk_format:
        raise ImageCorrupt(f"image {image_id} claims disk_format {disk_format} but its data is "
                           f"{found.get('format')}")
    if found.get("backing-filename"):
        raise ImageCorrupt(f"image {image_id} refers to a backing file; images must be self-contained")
    if disk_format == "qcow2":
        try:
            await qemuimg.check(path)
        except qemuimg.DiskError as exc:
            raise ImageCorrupt(f"image {image_id} is a damaged qcow2: {exc}") from exc
    return int(found.get("virtual-size") or size)
