"""A ready `clouds.yaml` for the openstack CLI and openstacksdk."""

from __future__ import annotations

from pathlib import Path

import yaml

from canopy.private_files import write_private


def clouds_yaml(auth_url: str, region: str, admin_password: str, demo_password: str) -> str:
    def cloud(user: str, password: str, project: str) -> dict[str, object]:
        return {
            "auth": {"auth_url": auth_url, "username": user, "password": password, "project_name": project,
                     "user_domain_name": "Default", "project_domain_name": "Default"},
            "region_name": region,
            "interface": "public",
            "identity_api_version": 3,
        }

    return yaml.safe_dump({"clouds": {"canopy": cloud("admin", admin_password, "admin"),
                                      "canopy-demo": cloud("demo", demo_password, "demo")}}, sort_keys=False)


def write_clouds_yaml(path: Path, auth_url: str, region: str, admin_password: str, demo_password: str) -> None:
    """Write clouds.yaml (it holds the admin password) readable by its owner only."""
    write_private(path, clouds_yaml(auth_url, region, admin_password, demo_password))
