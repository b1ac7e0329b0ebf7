"""File injection: keys, network settings, hostname and files written into a guest's root filesystem
without mounting it (issue 6) — the alternative to the config drive.

    files = spec_files(spec)                          # /etc/hostname, /root/.ssh/authorized_keys, ...
    await inject_ext4(Path("disk.raw"), files)        # debugfs -w on a raw ext2/3/4 image
    await inject_into_overlay(base, "qcow2", Path("disk"), size, files)   # a qcow2 overlay, see below

Only e2fsprogs' `debugfs` touches the image: nothing is mounted and the host kernel never parses the
guest's filesystem. Every path is checked before anything is written: it must be absolute and normal
(no `..`, no `.`, no NUL, a safe character set), and no existing component may be a symlink or a
non-directory (checked with debugfs `stat`, which does not follow the last component). A refusal leaves
the image untouched.

For a qcow2 guest the files go into a temporary raw copy of the base, then a qcow2 overlay is made on
that copy and `qemu-img rebase` (safe mode) re-points it at the shared base: rebase writes into the
overlay exactly the clusters in which the copy differs from the base — the injected files and their
metadata — so the guest's disk is an ordinary small overlay over the shared base, as without injection.
"""

from __future__ import annotations

import asyncio
import json
import posixpath
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path

from canopy.agent import configdrive
from canopy.agent.disk import qemuimg
from canopy.agent.virt.base import DriverError
from canopy.rpc.calls import InstanceSpec

# debugfs splits its commands on whitespace and treats quotes specially: guest paths use a safe set
SAFE = re.compile(r"^/[A-Za-z0-9._@+=,:~/-]*$")
BANNER = re.compile(r"^debugfs \d")


class InjectionRefused(DriverError):
    """An injection request names a path outside the guest's filesystem or through a link."""


@dataclass(frozen=True)
class GuestFile:
    """One file to write into the guest."""

    path: str
    content: bytes
    mode: int = 0o644
    uid: int = 0
    gid: int = 0


def guest_path(path: str) -> str:
    """The path if it is absolute, normal and inside the guest's root; InjectionRefused otherwise."""
    if "\x00" in path:
        raise InjectionRefused(f"injection path {path!r} contains a NUL byte")
    if not path.startswith("/"):
        raise InjectionRefused(f"injection path {path!r} is not absolute")
    parts = path.split("/")[1:]
    if any(p in ("..", ".") for p in parts):
        raise InjectionRefused(f"injection path {path!r} has '.' or '..' components")
    if posixpath.normpath(path) != path or path == "/" or path.startswith("//"):
        raise InjectionRefused(f"injection path {path!r} is not a normalized file path")
    if not SAFE.match(path):
        raise InjectionRefused(f"injection path {path!r} has characters outside [A-Za-z0-9._@+=,:~/-]")
    return path


def interfaces(spec: InstanceSpec) -> str:
    """Debian ifupdown settings for the ports, in order (eth0, eth1, ...), static as config drives give."""
    lines = ["# written by canopy (file injection)", "auto lo", "iface lo inet loopback"]
    data = configdrive.network_data(spec)
    by_link = {link["id"]: n for n, link in enumerate(data["links"])}
    for net in data["networks"]:
        eth = f"eth{by_link[net['link']]}"
        family = "inet6" if net["type"] == "ipv6" else "inet"
        lines += ["", f"auto {eth}", f"iface {eth} {family} static", f"    address {net['ip_address']}",
                  f"    netmask {net['netmask']}"]
        for route in net["routes"]:
            if route["network"] in ("0.0.0.0", "::"):
                lines.append(f"    gateway {route['gateway']}")
        dns = [s["address"] for s in net["services"] if s["type"] == "dns"]
        if dns:
            lines.append(f"    dns-nameservers {' '.join(dns)}")
    return "\n".join(lines) + "\n"


def spec_files(spec: InstanceSpec, extra: dict[str, bytes] | None = None) -> list[GuestFile]:
    """The hostname, SSH key, network settings (ifupdown and network_data.json) and extra files."""
    out = [GuestFile("/etc/hostname", f"{spec.hostname}\n".encode()),
           GuestFile("/etc/network/interfaces", interfaces(spec).encode()),
           GuestFile("/etc/canopy/network_data.json", json.dumps(configdrive.network_data(spec)).encode())]
    if spec.key_data:
        out.append(GuestFile("/root/.ssh/authorized_keys", spec.key_data.strip().encode() + b"\n", 0o600))
    out += [GuestFile(path, data) for path, data in (extra or {}).items()]
    return out


async def _debugfs(image: Path, script: str, write: bool = False) -> str:
    """Run debugfs commands on an image; stdout, or DriverError with what it complained about."""
    args = ["-w"] if write else []
    proc = await asyncio.create_subprocess_exec("debugfs", *args, "-f", "-", str(image),
                                                stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
                                                stderr=asyncio.subprocess.PIPE)
    out, err = await proc.communicate(script.encode())
    problems = [ln for ln in err.decode(errors="replace").splitlines() if ln.strip() and not BANNER.match(ln)]
    if proc.returncode != 0 or problems:
        raise DriverError(f"debugfs on {image.name} failed: {'; '.join(problems)[:400] or proc.returncode}")
    return out.decode(errors="replace")


async def _kind(image: Path, path: str) -> str | None:
    """The inode type at path ("directory", "regular", "symlink", ...), None if missing; no link followed."""
    proc = await asyncio.create_subprocess_exec("debugfs", "-R", f"stat {path}", str(image),
                                                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await proc.communicate()
    m = re.search(r"Type:\s+(\S+)", out.decode(errors="replace"))
    if m:
        return m.group(1)
    text = err.decode(errors="replace")
    if "not found" in text:
        return None
    raise DriverError(f"{image.name} is not a readable ext2/3/4 filesystem: {text.strip()[:300]}")


async def _plan(image: Path, f: GuestFile, made: set[str]) -> list[str]:
    """debugfs commands writing one file, after refusing links and non-directories on its way."""
    cmds: list[str] = []
    parts = f.path.split("/")[1:]
    for i in range(1, len(parts)):
        d = "/" + "/".join(parts[:i])
        if d in made:
            continue
        kind = await _kind(image, d)
        if kind == "symlink":
            raise InjectionRefused(f"injection path {f.path!r} goes through the symlink {d} in the guest")
        if kind is None:
            cmds.append(f"mkdir {d}")
            made.add(d)
        elif kind != "directory":
            raise InjectionRefused(f"injection path {f.path!r}: {d} is a {kind}, not a directory, in the guest")
    kind = None if f.path in made else await _kind(image, f.path)
    if kind == "symlink":
        raise InjectionRefused(f"injection path {f.path!r} is a symlink in the guest")
    if kind not in (None, "regular"):
        raise InjectionRefused(f"injection path {f.path!r} is a {kind} in the guest, not a file")
    if kind == "regular":
        cmds.append(f"rm {f.path}")  # debugfs `write` refuses an existing name
    return cmds


async def inject_ext4(image: Path, files: list[GuestFile]) -> None:
    """Write files into a raw ext2/3/4 image without mounting it; all paths are checked first."""
    for f in files:
        guest_path(f.path)
    if len({f.path for f in files}) != len(files):
        raise InjectionRefused("injection names the same path twice")
    made: set[str] = set()
    with tempfile.TemporaryDirectory(prefix="canopy-inject-") as tmp:
        script: list[str] = []
        for n, f in enumerate(files):
            script += await _plan(image, f, made)
            local = Path(tmp) / f"f{n}"
            local.write_bytes(f.content)
            script += [f"write {local} {f.path}", f"sif {f.path} mode 0{0o100000 | f.mode:o}",
                       f"sif {f.path} uid {f.uid}", f"sif {f.path} gid {f.gid}"]
        if any(f.path.startswith("/root/.ssh/") for f in files) and "/root/.ssh" in made:
            script.append("sif /root/.ssh mode 040700")  # sshd ignores keys in a group-readable folder
        await _debugfs(image, "\n".join(script) + "\n", write=True)


async def inject_into_overlay(base: Path, base_format: str, overlay: Path, size_bytes: int | None,
                              files: list[GuestFile]) -> None:
    """Make `overlay` (qcow2 over `base`) already holding the files: raw copy, inject, overlay, rebase."""
    for f in files:
        guest_path(f.path)  # refuse before copying anything
    with tempfile.TemporaryDirectory(prefix="canopy-inject-", dir=overlay.parent) as tmp:
        raw = Path(tmp) / "disk.raw"
        await qemuimg.run("convert", "-q", "-f", base_format, "-O", "raw", str(base), str(raw))
        await inject_ext4(raw, files)
        try:
            await qemuimg.create_overlay(raw, "raw", overlay, size_bytes)
            # safe rebase: copies into the overlay the clusters where the injected copy differs from base
            await qemuimg.run("rebase", "-q", "-f", "qcow2", "-b", str(base), "-F", base_format, str(overlay),
                              timeout_s=1800)
        except BaseException:
            overlay.unlink(missing_ok=True)
            raise


def wanted(deployment_default: bool, image_props: dict[str, str]) -> bool:
    """Whether a guest gets injected files: the image's `canopy_injection` property, else the deployment's."""
    value = image_props.get("canopy_injection")
    if value is None:
        return deployment_default
    return value.strip().lower() in ("true", "1", "yes", "on")
