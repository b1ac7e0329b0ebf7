"""What one boot sends on the bus does not depend on how many hosts share its network: on a flat network
(no ARP responder) a boot on a 100-host cloud sends exactly what it sends on a 10-host one — its own
host's messages, nobody else's."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

from tests.clouds import boot_port, in_process_cloud, open_group, stack_settings
from tests.waiting import wait_until


def record(bus: Any, hosts: int) -> Counter[str]:
    """Count the messages delivered to agents (calls, casts; a fanout to agents counts once per agent it
    reaches), by kind."""
    sent: Counter[str] = Counter()
    call, cast, fanout = bus.call, bus.cast, bus.fanout

    async def calling(target: Any, msg: Any, timeout: float | None = None) -> Any:
        if target.topic == "agent":
            sent[f"call {msg.kind}"] += 1
        return await call(target, msg, timeout=timeout)

    async def casting(target: Any, msg: Any) -> None:
        if target.topic == "agent":
            sent[f"cast {msg.kind}"] += 1
        await cast(target, msg)

    async def fanning(topic: str, msg: Any) -> None:
        sent[f"fanout {topic} {msg.kind}"] += hosts if topic == "agent" else 1
        await fanout(topic, msg)

    bus.call, bus.cast, bus.fanout = calling, casting, fanning
    return sent


async def messages_of_a_boot(data_dir: Path, hosts: int) -> Counter[str]:
    async with in_process_cloud(stack_settings(data_dir), hosts) as stack:
        await open_group(stack.api, "admin")  # a group without remote-group rules: no peers to tell
        groups = [{"name": "open"}]
        for n in range(3):  # other hosts of the network hold ports already
            await boot_port(stack, f"warm-{n}", "admin", availability_zone=f"nova:hv-{n + 1:04d}",
                            security_groups=groups)
        sent = record(stack.cloud.bus, hosts)
        await boot_port(stack, "counted", "admin", availability_zone=f"nova:hv-{hosts:04d}", security_groups=groups)
        netsync = stack.conductor.netsync
        await wait_until(lambda: not netsync._pending, timeout=5)  # the other hosts' round, if any, went out
        return sent


async def test_one_boot_sends_the_same_messages_on_10_and_100_hosts(tmp_path: Path) -> None:
    small = await messages_of_a_boot(tmp_path / "small", 10)
    large = await messages_of_a_boot(tmp_path / "large", 100)
    assert large == small, (small, large)
    assert large["call network_sync"] == 1  # the owner host's port; no other host hears of it
    assert sum(large.values()) <= 4, large
