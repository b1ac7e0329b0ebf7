"""File injection into a real ext4 image with debugfs, never mounted (issue 6)."""

from __future__ import annotations

import hashlib
import os
import subprocess
from pathlib import Path

import pytest

from canopy.agent.disk import qemuimg
from canopy.agent.inject import GuestFile, InjectionRefused, guest_path, inject_ext4, inject_into_overlay, spec_files
from canopy.rpc.calls import InstanceSpec, PortSpec

KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIExampleKeyForCanopyTests demo@example"


def _spec() -> InstanceSpec:
    port = PortSpec(id="p1", mac_address="fa:16:3e:00:00:01", network_id="n1",
                    fixed_ips=[{"ip_address": "192.0.2.10"}],
                    subnets=[{"cidr": "192.0.2.0/24", "gateway_ip": "192.0.2.1", "dns_nameservers": ["192.0.2.53"]}])
    return InstanceSpec(uuid="u1", name="web", hostname="web-1", project_id="p", vcpus=1, memory_mb=64,
                        disk_gb=1, image_id="img", ports=[port], key_data=KEY)


@pytest.fixture
def image(tmp_path: Path) -> Path:
    """A small ext4 image with /etc, /root, a symlink /evil -> /tmp and /etc/dir-link -> ../var."""
    content = tmp_path / "content"
    (content / "etc").mkdir(parents=True)
    (content / "root").mkdir()
    (content / "var").mkdir()
    (content / "etc" / "hostname").write_text("old\n")
    (content / "evil").symlink_to("/tmp")
    (content / "etc" / "dir-link").symlink_to("../var")
    img = tmp_path / "root.ext4"
    subprocess.run(["mkfs.ext4", "-q", "-F", "-d", str(content), str(img), "8M"], check=True)
    return img


def _cat(img: Path, path: str) -> str:
    return subprocess.run(["debugfs", "-R", f"cat {path}", str(img)], capture_output=True, text=True,
                          check=True).stdout


def _stat(img: Path, path: str) -> str:
    return subprocess.run(["debugfs", "-R", f"stat {path}", str(img)], capture_output=True, text=True,
                          check=True).stdout


def _digest(p: Path) -> str:
    return hashlib.sha256(p.read_bytes()).hexdigest()


async def test_key_hostname_network_and_files_read_back(image: Path) -> None:
    files = spec_files(_spec(), {"/opt/app/motd": b"hello from canopy\n"})
    await inject_ext4(image, files)
    assert _cat(image, "/etc/hostname") == "web-1\n"  # an existing file is replaced
    assert _cat(image, "/root/.ssh/authorized_keys") == KEY + "\n"
    net = _cat(image, "/etc/network/interfaces")
    assert "iface eth0 inet static" in net and "address 192.0.2.10" in net and "gateway 192.0.2.1" in net
    assert "192.0.2.10" in _cat(image, "/etc/canopy/network_data.json")
    assert _cat(image, "/opt/app/motd") == "hello from canopy\n"
    assert "Mode:  0600" in _stat(image, "/root/.ssh/authorized_keys")
    assert "Mode:  0700" in _stat(image, "/root/.ssh")
    fsck = subprocess.run(["e2fsck", "-fn", str(image)], capture_output=True, text=True)
    assert fsck.returncode == 0, fsck.stdout + fsck.stderr


@pytest.mark.parametrize("bad", ["../etc/passwd", "/etc/../../x", "etc/passwd", "/etc/./x", "/a\x00b",
                                 "/", "//etc/x", "/etc/x/", "/etc/a b"])
def test_paths_outside_or_odd_are_refused(bad: str) -> None:
    with pytest.raises(InjectionRefused, match="injection path"):
        guest_path(bad)


@pytest.mark.parametrize("bad", ["../etc/passwd", "/etc/../../x", "/evil/x", "/evil", "/etc/dir-link/x",
                                 "/etc/hostname/x"])
async def test_refused_requests_write_nothing(image: Path, bad: str) -> None:
    before = _digest(image)
    files = [GuestFile("/etc/ok", b"written first?\n"), GuestFile(bad, b"pwned\n")]
    with pytest.raises(InjectionRefused) as exc:
        await inject_ext4(image, files)
    assert "injection path" in str(exc.value)
    if bad.startswith(("/evil", "/etc/dir-link")):
        assert "symlink" in str(exc.value)
    assert _digest(image) == before  # not even the valid file went in


async def test_not_an_ext4_image_is_a_clear_error(tmp_path: Path) -> None:
    junk = tmp_path / "junk.raw"
    junk.write_bytes(os.urandom(1 << 20))
    with pytest.raises(Exception, match="not a readable ext2/3/4 filesystem"):
        await inject_ext4(junk, [GuestFile("/etc/hostname", b"x\n")])


async def test_qcow2_overlay_holds_the_files_and_stays_small(image: Path, tmp_path: Path) -> None:
    base = tmp_path / "base.qcow2"
    await qemuimg.run("convert", "-q", "-f", "raw", "-O", "qcow2", str(image), str(base))
    overlay = tmp_path / "guest" / "disk"
    overlay.parent.mkdir()
    await inject_into_overlay(base, "qcow2", overlay, 16 << 20, spec_files(_spec()))
    info = await qemuimg.info(overlay)
    assert (info["backing-filename"], info["virtual-size"]) == (str(base), 16 << 20)
    assert not any(p.name.startswith("canopy-inject-") for p in overlay.parent.iterdir())  # raw copy gone
    assert info["actual-size"] < 1 << 20  # only the changed clusters, not the 8 MB filesystem
    flat = tmp_path / "flat.raw"
    await qemuimg.run("convert", "-q", "-f", "qcow2", "-O", "raw", str(overlay), str(flat))
    assert _cat(flat, "/etc/hostname") == "web-1\n"
    assert _cat(flat, "/root/.ssh/authorized_keys") == KEY + "\n"
    base_raw = tmp_path / "base.raw"
    await qemuimg.run("convert", "-q", "-f", "qcow2", "-O", "raw", str(base), str(base_raw))
    assert _cat(base_raw, "/etc/hostname") == "old\n"  # the shared base is untouched


async def test_qcow2_refusal_happens_before_any_copy(tmp_path: Path) -> None:
    overlay = tmp_path / "disk"
    with pytest.raises(InjectionRefused):
        await inject_into_overlay(tmp_path / "missing", "qcow2", overlay, None, [GuestFile("../x", b"")])
    assert not overlay.exists()


@pytest.mark.parametrize(("default", "props", "want"), [
    (False, {}, False), (True, {}, True), (False, {"canopy_injection": "true"}, True),
    (True, {"canopy_injection": "false"}, False), (False, {"canopy_injection": " Yes "}, True)])
def test_injection_per_deployment_or_image(default: bool, props: dict[str, str], want: bool) -> None:
    from canopy.agent.inject import wanted
    assert wanted(default, props) is want
