# ruff: noqa: F811  (the shared fixture `real` is imported, then named as a test parameter)
"""A real tiny guest booted with file injection instead of a config drive (issue 6): the host writes the
key, hostname and network settings into its ext4 disk with debugfs, the guest prints them from its own
disk. Reuses the real-guest fixture (skipped with the reason where libvirt/QEMU are missing)."""

from __future__ import annotations

import subprocess

from tests.integration import tinyguest
from tests.integration.test_mobility_real import delete
from tests.integration.test_real_guest import SSH_KEY, RealCloud, _upload, boot, real, show, wait_console  # noqa: F401


async def test_injected_guest_prints_key_and_network_without_config_drive(real: RealCloud) -> None:
    guest = tinyguest.build()
    tiny = real.images["tiny"]
    meta = (await real.api.get(f"/image/v2/images/{tiny}")).json()
    real.images["inject"] = await _upload(real.api, "tiny-injected", guest.disk, "qcow2",
                                          os_command_line=tinyguest.CMDLINE, kernel_id=meta["kernel_id"],
                                          ramdisk_id=meta["ramdisk_id"], canopy_injection="true")
    sid = await boot(real, "inject", "inj-1")
    s = await show(real, sid)
    assert s["status"] == "ACTIVE", s
    out = await wait_console(real, sid, "CANOPY-BOOTED")
    ip = next(a["addr"] for addrs in s["addresses"].values() for a in addrs)
    assert f"CANOPY-INJECTED-KEY={SSH_KEY}" in out
    assert "CANOPY-INJECTED-HOSTNAME=inj-1" in out
    assert f"CANOPY-INJECTED-IP={ip}" in out and "CANOPY-INJECTED-GATEWAY=198.51.100.1" in out
    assert "CANOPY-NO-CONFIG-DRIVE" in out  # injection instead of the drive
    disk = real.settings.libvirt.instances_path / sid / "disk"
    assert not (disk.parent / "disk.config").exists()
    info = subprocess.run(["qemu-img", "info", "-U", str(disk)], capture_output=True, text=True, check=True)
    assert "backing file:" in info.stdout  # still a small overlay over the shared base
    await delete(real, sid)
