"""A port as the network layer hands it to its callers: a typed record. The Neutron-shaped view (ISO
timestamps, `binding:*` keys) is rendered from it at the edge, by the network API."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class PortRecord:
    """One port: its row's columns, its QoS policy, its OpenFlow number on its host, and its addresses."""

    id: str
    network_id: str
    project_id: str
    mac_address: str
    device_id: str
    device_owner: str
    host_id: str
    status: str
    admin_state_up: bool
    port_security_enabled: bool
    created_at: dt.datetime
    updated_at: dt.datetime
    name: str = ""
    description: str = ""
    allowed_address_pairs: list[dict[str, str]] = field(default_factory=list)
    qos_policy_id: str | None = None
    ofport: int | None = None
    fixed_ips: list[dict[str, str]] = field(default_factory=list)  # [{"subnet_id", "ip_address"}]
    security_groups: list[str] = field(default_factory=list)

    @classmethod
    def of_row(cls, row: dict[str, Any], fixed_ips: list[dict[str, str]]) -> PortRecord:
        """The record of a ports row (with `qos_policy_id` and `ofport` joined in) and its addresses."""
        return cls(
            id=row["id"], network_id=row["network_id"], project_id=row["project_id"], name=row["name"],
            description=row["description"], mac_address=row["mac_address"], device_id=row["device_id"],
            device_owner=row["device_owner"], host_id=row["host_id"], status=row["status"],
            admin_state_up=row["admin_state_up"], port_security_enabled=row["port_security_enabled"],
            allowed_address_pairs=list(row["allowed_address_pairs"] or []), created_at=row["created_at"],
            updated_at=row["updated_at"], qos_policy_id=row.get("qos_policy_id"), ofport=row.get("ofport"),
            fixed_ips=list(fixed_ips), security_groups=list(row.get("security_groups") or []))

    def row(self) -> dict[str, Any]:
        """The record as a row of the ports table, with `qos_policy_id` and `ofport` (what netsync reads)."""
        return {"id": self.id, "network_id": self.network_id, "project_id": self.project_id, "name": self.name,
                "description": self.description, "mac_address": self.mac_address, "device_id": self.device_id,
                "device_owner": self.device_owner, "host_id": self.host_id, "status": self.status,
                "admin_state_up": self.admin_state_up, "port_security_enabled": self.port_security_enabled,
                "allowed_address_pairs": self.allowed_address_pairs, "created_at": self.created_at,
                "updated_at": self.updated_at, "qos_policy_id": self.qos_policy_id, "ofport": self.ofport,
                "security_groups": list(self.security_groups)}
