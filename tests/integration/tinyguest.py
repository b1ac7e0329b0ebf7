"""A tiny bootable guest built offline, and a private-enough libvirt for it.

The guest: Debian's stock kernel (`apt-get download linux-image-<version>-amd64`, unpacked with
`dpkg-deb -x`, decompressed to an ELF vmlinux that QEMU boots twice as fast), a busybox-static initramfs
whose /init loads the virtio, ext4, iso9660 and ACPI-button modules, mounts its disk and the config drive
(`findfs LABEL=config-2`) and prints on ttyS0 what it found:

    CANOPY-HOSTNAME=web-1
    CANOPY-IP=198.51.100.10
    CANOPY-GATEWAY=198.51.100.1
    CANOPY-DNS=192.0.2.53
    CANOPY-SSH-KEY=ssh-ed25519 AAAA... canopy-test
    CANOPY-DISK-BYTES=1073741824
    CANOPY-FS-BYTES=7311360
    CANOPY-ROOTFS=canopy tiny guest disk
    CANOPY-EXTRA-DISK=vdb:canopy tiny guest disk   (only with a second ext4 disk, as in rescue)
    CANOPY-BOOTED

then waits for the ACPI power button and powers off (CANOPY-POWEROFF) — unless the kernel command line
says `canopy.ignore_acpi`, the guest that ignores ACPI. With `canopy.tick` it also prints
`CANOPY-TICK=<n>` every second after booting (a heartbeat that a live migration must not interrupt).
With `canopy.probe` it prints the accelerator probe's marker and powers off at once. The build is cached
under ~/.cache/canopy-test/ by kernel version and a hash of this file, so later runs reuse it (about 20 s
the first time).
"""

from __future__ import annotations

import hashlib
import lzma
import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

CACHE = Path(os.environ.get("CANOPY_TEST_CACHE", Path.home() / ".cache" / "canopy-test"))
MODULES = ("virtio_pci", "virtio_blk", "virtio_net", "ext4", "isofs", "button", "evdev")
MARKER = "CANOPY-BOOTED"
PROBE_MARKER = "CANOPY-PROBE-OK"
CMDLINE = "console=ttyS0 panic=-1 quiet"

INIT = r"""#!/bin/sh
/bin/busybox --install -s /bin
mount -t proc proc /proc; mount -t sysfs sys /sys; mount -t devtmpfs dev /dev
if grep -q canopy.probe /proc/cmdline; then echo "CANOPY-PROBE-OK"; poweroff -f; fi
for m in $(cat /modules.list); do insmod /mods/$m 2>/dev/null; done
i=0; cfg=""
while [ $i -lt 100 ]; do cfg=$(findfs LABEL=config-2 2>/dev/null) && break; i=$((i+1)); usleep 50000; done
mkdir -p /cfg /disk
mount -t iso9660 -o ro "$cfg" /cfg 2>/dev/null || echo "CANOPY-NO-CONFIG-DRIVE"
M=/cfg/openstack/latest/meta_data.json; N=/cfg/openstack/latest/network_data.json
h=$(grep -o '"hostname": "[^"]*"' $M | cut -d'"' -f4); hostname "$h"
echo "CANOPY-HOSTNAME=$(hostname)"
for ip in $(grep -o '"ip_address": "[^"]*"' $N | cut -d'"' -f4); do echo "CANOPY-IP=$ip"; done
for gw in $(grep -o '"gateway": "[^"]*"' $N | cut -d'"' -f4); do echo "CANOPY-GATEWAY=$gw"; done
for d in $(grep -A1 '"type": "dns"' $N | grep -o '"address": "[^"]*"' | cut -d'"' -f4 | sort -u); do
  echo "CANOPY-DNS=$d"; done
echo "CANOPY-SSH-KEY=$(grep -o '"ssh-[^"]*"' $M | head -1 | tr -d '"')"
echo "CANOPY-DISK-BYTES=$(( $(cat /sys/block/vda/size) * 512 ))"
if mount -t ext4 -o ro /dev/vda /disk 2>/dev/null; then
  echo "CANOPY-FS-BYTES=$(( $(stat -f -c %b /disk) * $(stat -f -c %S /disk) ))"
  echo "CANOPY-ROOTFS=$(cat /disk/canopy-disk)"
fi
mkdir -p /other
for d in vdb vdc vdd; do  # a second guest disk (a rescued server's own disk, say)
  if [ -e /dev/$d ] && mount -t ext4 -o ro /dev/$d /other 2>/dev/null; then
    echo "CANOPY-EXTRA-DISK=$d:$(cat /other/canopy-disk)"; umount /other
  fi
done
if [ -f /disk/root/.ssh/authorized_keys ]; then  # issue 6: files injected into the disk by the host
  echo "CANOPY-INJECTED-HOSTNAME=$(cat /disk/etc/hostname)"
  echo "CANOPY-INJECTED-KEY=$(head -1 /disk/root/.ssh/authorized_keys)"
  I=/disk/etc/network/interfaces
  for a in $(grep -o 'address [0-9.]*' $I | cut -d' ' -f2); do echo "CANOPY-INJECTED-IP=$a"; done
  for g in $(grep -o 'gateway [0-9.]*' $I | cut -d' ' -f2); do echo "CANOPY-INJECTED-GATEWAY=$g"; done
fi
# With server metadata canopy_net=up the guest puts its address on eth0 (canopy_ip overrides it: a
# spoofing guest) and pings each address of canopy_ping (comma separated), then prints how it went.
if grep -q '"canopy_net": "up"' $M; then
  a=$(grep -o '"canopy_ip": "[^"]*"' $M | cut -d'"' -f4)
  [ -n "$a" ] || a=$(grep -o '"ip_address": "[^"]*"' $N | head -1 | cut -d'"' -f4)
  ip link set lo up; ip link set eth0 up; ip addr add "$a/24" dev eth0
  echo "CANOPY-NET-UP=$a"
  for t in $(grep -o '"canopy_ping": "[^"]*"' $M | cut -d'"' -f4 | tr ',' ' '); do
    if ping -c 3 -W 2 "$t" >/dev/null 2>&1; then echo "CANOPY-PING=$t:ok"; else echo "CANOPY-PING=$t:fail"; fi
  done
fi
echo "CANOPY-BOOTED"
if grep -q canopy.tick /proc/cmdline; then  # a heartbeat, to see a live migration not stop the guest
  (t=0; while true; do t=$((t+1)); echo "CANOPY-TICK=$t"; sleep 1; done) &
fi
if grep -q canopy.ignore_acpi /proc/cmdline; then
  echo "CANOPY-IGNORING-ACPI"
  while true; do sleep 3600; done
fi
ev=""
for d in /sys/class/input/input*; do
  [ "$(cat $d/name)" = "Power Button" ] && ev=/dev/input/$(basename $(ls -d $d/event* | head -1))
done
dd if=$ev bs=24 count=1 of=/dev/null 2>/dev/null
echo "CANOPY-POWEROFF"; sync; poweroff -f
"""


class GuestUnavailable(Exception):
    """The guest cannot be built on this machine (the message says why, for the skip)."""


@dataclass(frozen=True)
class TinyGuest:
    kernel: Path  # ELF vmlinux
    initrd: Path
    disk: Path  # qcow2 with an ext4 filesystem holding /canopy-disk
    version: str


def _run(*args: str, cwd: Path | None = None) -> str:
    proc = subprocess.run(args, cwd=cwd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise GuestUnavailable(f"{' '.join(args)} failed: {proc.stderr.strip()[:300]}")
    return proc.stdout


def kernel_package() -> str:
    """The current Debian kernel package (linux-image-<version>-amd64) the meta-package depends on."""
    for attempt in range(2):
        try:
            for line in _run("apt-cache", "depends", "linux-image-amd64").splitlines():
                line = line.strip()
                if line.startswith("Depends: linux-image-") and line.endswith("-amd64"):
                    return line.split()[-1]
        except GuestUnavailable:
            pass
        if attempt == 0:  # package lists missing or stale (a fresh machine): refresh them once
            subprocess.run(["apt-get", "update", "-q"], capture_output=True)
    raise GuestUnavailable("apt-cache knows no linux-image-amd64, even after apt-get update")


def build(cache: Path = CACHE) -> TinyGuest:
    """The tiny guest, built once and reused."""
    for tool in ("apt-get", "dpkg-deb", "depmod", "modprobe", "cpio", "mkfs.ext4", "qemu-img"):
        if shutil.which(tool) is None:
            raise GuestUnavailable(f"{tool} is not installed (see scripts/system-packages.txt)")
    if not Path("/bin/busybox").exists():
        raise GuestUnavailable("/bin/busybox is missing (busybox-static)")
    package = kernel_package()
    version = package.removeprefix("linux-image-")
    digest = hashlib.sha256(Path(__file__).read_bytes()).hexdigest()[:12]
    out = cache / f"tinyguest-{version}-{digest}"
    guest = TinyGuest(out / "vmlinux", out / "initrd.img", out / "disk.qcow2", version)
    if all(p.exists() for p in (guest.kernel, guest.initrd, guest.disk)):
        return guest
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=cache) as work_s:
        work = Path(work_s)
        _run("apt-get", "download", "-q", package, cwd=work)
        deb = next(work.glob("linux-image-*.deb"))
        _run("dpkg-deb", "-x", str(deb), str(work / "root"))
        _vmlinux(work / "root" / "boot" / f"vmlinuz-{version}", out / "vmlinux.part")
        _initramfs(work, version, out / "initrd.part")
        _disk(work, out / "disk.part")
    for name in ("vmlinux", "initrd.img", "disk.qcow2"):
        (out / {"vmlinux": "vmlinux.part", "initrd.img": "initrd.part", "disk.qcow2": "disk.part"}[name]).replace(
            out / name)
    prune(cache, out)
    return guest


def _vmlinux(vmlinuz: Path, dest: Path) -> None:
    """Decompress the kernel from its bzImage (Debian's is xz): QEMU boots the ELF directly (PVH)."""
    data = vmlinuz.read_bytes()
    start = data.find(b"\xfd7zXZ\x00")
    if start < 0:
        raise GuestUnavailable(f"{vmlinuz.name} is not xz-compressed; cannot extract vmlinux")
    elf = lzma.LZMADecompressor().decompress(data[start:])
    if not elf.startswith(b"\x7fELF"):
        raise GuestUnavailable("the decompressed kernel is not an ELF file")
    dest.write_bytes(elf)


def _initramfs(work: Path, version: str, dest: Path) -> None:
    root, ird = work / "root", work / "initramfs"
    _run("depmod", "-b", str(root), version)
    for d in ("bin", "mods", "proc", "sys", "dev", "cfg", "disk"):
        (ird / d).mkdir(parents=True, exist_ok=True)
    shutil.copy("/bin/busybox", ird / "bin" / "busybox")
    (ird / "bin" / "sh").symlink_to("busybox")
    order: list[str] = []
    for module in MODULES:
        for line in _run("modprobe", "-d", str(root), "-S", version, "--show-depends", module).splitlines():
            if line.startswith("insmod "):
                path = Path(line.split()[1])
                if path.name not in order:
                    shutil.copy(path, ird / "mods" / path.name)
                    order.append(path.name)
    (ird / "modules.list").write_text("\n".join(order) + "\n")
    (ird / "init").write_text(INIT)
    (ird / "init").chmod(0o755)
    files = subprocess.run(["find", "."], cwd=ird, capture_output=True, check=True).stdout
    archive = subprocess.run(["cpio", "-o", "-H", "newc", "--quiet"], cwd=ird, input=files, capture_output=True,
                             check=True).stdout
    import gzip

    dest.write_bytes(gzip.compress(archive, compresslevel=1))


def _disk(work: Path, dest: Path) -> None:
    content = work / "disk-content"
    content.mkdir()
    (content / "canopy-disk").write_text("canopy tiny guest disk\n")
    raw = work / "disk.raw"
    _run("mkfs.ext4", "-q", "-F", "-L", "canopy-root", "-d", str(content), str(raw), "32M")
    _run("qemu-img", "convert", "-f", "raw", "-O", "qcow2", str(raw), str(dest))


def prune(cache: Path, keep: Path) -> None:
    """Remove older builds of the guest (another kernel version or init script)."""
    for old in cache.glob("tinyguest-*"):
        if old != keep and old.is_dir():
            shutil.rmtree(old, ignore_errors=True)


# -- libvirt on this machine ------------------------------------------------------------------------

@dataclass
class LocalLibvirt:
    """libvirtd and virtlogd for qemu:///system: started here only if they were not running, stopped by
    PID at the end (only what was started here)."""

    started: list[tuple[str, int]]
    kvm_restore: tuple[int, int] | None

    def stop(self) -> None:
        import signal
        import time

        for _name, pid in reversed(self.started):
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                continue
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline and Path(f"/proc/{pid}").exists():
                if Path(f"/proc/{pid}/stat").read_text().split()[2] == "Z":
                    break
                time.sleep(0.05)
        if self.kvm_restore is not None and Path("/dev/kvm").exists():
            mode, gid = self.kvm_restore
            os.chown("/dev/kvm", 0, gid)
            os.chmod("/dev/kvm", mode)


def _alive(pidfile: Path) -> int | None:
    try:
        pid = int(pidfile.read_text().strip())
        os.kill(pid, 0)
        return pid
    except (OSError, ValueError):
        return None


def _kvm_group_access() -> tuple[int, int] | None:
    """Give /dev/kvm the group and mode udev gives it on any Debian host (root:kvm 0660), if it lacks them.

    Why: with /dev/kvm 0600 root, libvirt decides on every domain start that KVM is unusable for QEMU's
    user while its cached capabilities say KVM works, and re-probes QEMU each time (4 s to 45 s a start)."""
    import grp
    import stat

    kvm = Path("/dev/kvm")
    try:
        gid = grp.getgrnam("kvm").gr_gid
    except KeyError:
        return None
    if not kvm.exists():
        return None
    st = kvm.stat()
    if st.st_gid == gid and st.st_mode & 0o060 == 0o060:
        return None
    original = (stat.S_IMODE(st.st_mode), st.st_gid)
    os.chown(kvm, 0, gid)
    os.chmod(kvm, 0o660)
    return original


def ensure_libvirt() -> LocalLibvirt:
    """qemu:///system answering; raises GuestUnavailable when libvirt is not installed."""
    import time

    import libvirt

    libvirt.registerErrorHandler(lambda _ctx, _err: None, None)  # errors are raised; don't also print them
    for binary in ("/usr/sbin/libvirtd", "/usr/sbin/virtlogd", "/usr/bin/qemu-system-x86_64"):
        if not Path(binary).exists():
            raise GuestUnavailable(f"{binary} is not installed (libvirt-daemon-system, qemu-system-x86)")
    lv = LocalLibvirt([], _kvm_group_access())
    if _alive(Path("/run/virtlogd.pid")) is None:
        subprocess.run(["/usr/sbin/virtlogd", "-d"], check=True)
        pid = _wait_pid(Path("/run/virtlogd.pid"))
        lv.started.append(("virtlogd", pid))
    try:
        libvirt.open("qemu:///system").close()
    except libvirt.libvirtError:
        subprocess.run(["/usr/sbin/libvirtd", "-d"], check=True)
        lv.started.append(("libvirtd", _wait_pid(Path("/run/libvirtd.pid"))))
        deadline = time.monotonic() + 15
        while True:
            try:
                libvirt.open("qemu:///system").close()
                break
            except libvirt.libvirtError:
                if time.monotonic() > deadline:
                    lv.stop()
                    raise
                time.sleep(0.1)
    return lv


def _wait_pid(pidfile: Path) -> int:
    import time

    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        pid = _alive(pidfile)
        if pid is not None:
            return pid
        time.sleep(0.05)
    raise RuntimeError(f"{pidfile} never appeared")


# -- a second libvirt on this machine, as a second host ----------------------------------------------

SECOND_START = """set -e
mkdir -p /run/libvirt
for pair in "etc:/etc/libvirt" "run:/run/libvirt" "lib:/var/lib/libvirt" "cache:/var/cache/libvirt" \\
            "log:/var/log/libvirt"; do
  mount --bind "$BASE/${pair%%:*}" "${pair#*:}"
done
/usr/sbin/virtlogd -d -p /run/libvirt/virtlogd.pid
exec /usr/sbin/libvirtd -p /run/libvirt/libvirtd.pid
"""


@dataclass
class SecondLibvirt:
    """A second system-mode libvirtd (and its virtlogd) in a mount namespace of its own: its own
    /etc/libvirt (no domains, no networks, a host UUID of its own, no cgroups so its QEMUs never share a
    cgroup name with the first daemon's), /run/libvirt, /var/lib/libvirt, caches and logs. libvirt refuses
    to migrate between daemons reporting the same host UUID; these two are two hosts to it. Both share
    this machine's network stack, so the migration streams run over 127.0.0.1."""

    base: Path
    proc: subprocess.Popen[bytes]
    host_uuid: str

    @property
    def uri(self) -> str:
        return f"qemu+unix:///system?socket={self.base}/run/libvirt-sock"

    @staticmethod
    def first_uri() -> str:
        """The system libvirtd's URI as both daemons can reach it: the second one's /run/libvirt is its
        own, so the path goes through this (test) process's root, which is in the machine's namespace."""
        return f"qemu+unix:///system?socket=/proc/{os.getpid()}/root/run/libvirt/libvirt-sock"

    def stop(self) -> None:
        """Stop the daemon and its virtlogd by PID (the namespace and its mounts go with them)."""
        import signal

        pids = [self.proc.pid]
        logd = _alive(self.base / "run" / "virtlogd.pid")
        if logd is not None:
            pids.append(logd)
        for pid in pids:
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        if logd is not None:
            _wait_gone(logd)
        shutil.rmtree(self.base, ignore_errors=True)


def second_libvirt(host_uuid: str = "5e2ab9d0-c0de-4a11-8000-00000000b002", netns: str | None = None) -> SecondLibvirt:
    """Start a second libvirtd as described on SecondLibvirt (in network namespace `netns` if given: its
    guests' taps live there); raises GuestUnavailable if it can't run."""
    import time

    import libvirt

    libvirt.registerErrorHandler(lambda _ctx, _err: None, None)  # errors are raised; don't also print them
    if shutil.which("unshare") is None:
        raise GuestUnavailable("unshare (util-linux) is not installed")
    base = Path(tempfile.mkdtemp(prefix="canopy-libvirt2-", dir="/var/tmp"))
    shutil.copytree("/etc/libvirt", base / "etc", symlinks=True)
    for domain in (base / "etc" / "qemu").glob("*.xml"):
        domain.unlink()  # the first daemon's guests are not this one's
    shutil.rmtree(base / "etc" / "qemu" / "networks" / "autostart", ignore_errors=True)
    with (base / "etc" / "libvirtd.conf").open("a") as f:
        f.write(f'\nhost_uuid = "{host_uuid}"\n')
    with (base / "etc" / "qemu.conf").open("a") as f:
        f.write("\ncgroup_controllers = [ ]\n")
    for name, origin in (("lib", "/var/lib/libvirt"), ("cache", "/var/cache/libvirt")):
        (base / name).mkdir()
        for entry in Path(origin).iterdir():  # the folders with their owners, none of their contents
            (base / name / entry.name).mkdir()
            st = entry.stat()
            os.chown(base / name / entry.name, st.st_uid, st.st_gid)
            os.chmod(base / name / entry.name, st.st_mode & 0o7777)
    (base / "run").mkdir()
    (base / "log").mkdir()
    (base / "start.sh").write_text(SECOND_START)
    with (base / "daemon.log").open("wb") as log:  # the daemon keeps its own descriptor
        inside = ["ip", "netns", "exec", netns] if netns else []
        proc = subprocess.Popen([*inside, "unshare", "--mount", "--propagation", "private", "sh",
                                 str(base / "start.sh")], env={**os.environ, "BASE": str(base)}, stdout=log,
                                stderr=subprocess.STDOUT)
    lv = SecondLibvirt(base, proc, host_uuid)
    deadline = time.monotonic() + 20
    while True:
        try:
            libvirt.open(lv.uri).close()
            return lv
        except libvirt.libvirtError as exc:
            if proc.poll() is not None or time.monotonic() > deadline:
                tail = (base / "daemon.log").read_text(errors="replace")[-600:]
                lv.stop()
                raise GuestUnavailable(f"a second libvirtd in its own mount namespace did not start: {exc}; "
                                       f"its log: {tail}") from exc
            time.sleep(0.1)


def _wait_gone(pid: int) -> None:
    import time

    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and Path(f"/proc/{pid}").exists():
        if Path(f"/proc/{pid}/stat").read_text().split()[2] == "Z":
            return
        time.sleep(0.05)
