"""Wiring an agent whose guests run on libvirt: image client and cache, driver, reconciler.

    agent = libvirt_agent(settings, "hv-0001", bus)                 # `canopy agent --driver libvirt`
    agent = libvirt_agent(settings, "hv-1", bus, image_transport=httpx.ASGITransport(app))  # in-process
"""

from __future__ import annotations

import httpx

from canopy.agent.disk.backend import backend_for
from canopy.agent.disk.cache import ImageCache
from canopy.agent.disk.imageclient import ImageApiClient, service_image_client
from canopy.agent.disk.upload import ImageUploader
from canopy.agent.net.node import NetNode
from canopy.agent.net.setup import make_node
from canopy.agent.reconcile import HostReconciler, NetNodeHook, NetworkHook
from canopy.agent.service import Agent
from canopy.agent.virt.libvirt.driver import LibvirtDriver
from canopy.agent.virt.vif import FakeTaps, TapDevices
from canopy.config import Settings
from canopy.rpc.base import Transport


def libvirt_driver(settings: Settings, host: str, *, image_transport: httpx.AsyncBaseTransport | None = None,
                   taps: TapDevices | FakeTaps | None = None, client: ImageApiClient | None = None) -> LibvirtDriver:
    """The driver with its image cache, fetching through the Image API with the service credential, and
    the root-disk backend `[libvirt] disk_backend` names (DriverError: lvm without lvm_volume_group)."""
    lv = settings.libvirt
    disks = backend_for(lv.disk_backend, lv.instances_path, lv.lvm_volume_group, lv.lvm_thin_pool)
    client = client or service_image_client(settings, image_transport)
    cache = ImageCache(lv.image_cache_path or lv.instances_path / "_base", client,
                       max_age_s=lv.image_cache_max_age_s, min_free_bytes=int(lv.image_cache_min_free_gb * (1 << 30)))
    return LibvirtDriver(host, lv, cache, taps, disks)


def libvirt_agent(settings: Settings, host: str, bus: Transport, *, net: NetworkHook | None = None,
                  image_transport: httpx.AsyncBaseTransport | None = None,
                  taps: TapDevices | FakeTaps | None = None, node: NetNode | None = None) -> Agent:
    """An agent on libvirt that waits for libvirt and the switch, reconciles, and syncs power states. Its
    network node applies flows as `[network] apply` says (`ovs`: this host's Open vSwitch)."""
    a = settings.agent
    client = service_image_client(settings, image_transport)
    driver = libvirt_driver(settings, host, taps=taps, client=client)
    agent = Agent(host, driver, bus, heartbeat_s=a.heartbeat_s, availability_zone=a.availability_zone,
                  datacenter=a.datacenter, rack=a.rack, min_free_disk_gb=a.min_free_disk_gb,
                  net=node or make_node(host, settings),
                  health_disks={"instances": settings.libvirt.instances_path, "image_cache": driver.cache.root},
                  scratch_dir=driver.root)  # a snapshot's temporary copy goes next to the guests' disks
    agent.image_uploader = ImageUploader(client)  # snapshots go up with the same credential
    # The switch side is the agent's own network node unless the caller brings a hook of its own.
    agent.reconciler = HostReconciler(
        host, driver, bus, net=net or NetNodeHook(agent.net), power_sync_s=a.power_sync_s,
        reconcile_s=a.reconcile_s, ready_timeout_s=a.ready_timeout_s, remove_unknown=a.remove_unknown_guests,
        housekeeping=driver.evict_images)
    return agent
