"""Issue 14's pure cores: name/metadata/tag limits, JSON depth, the IPAM cursor that never proposes the
gateway or DNS address, and files written owner-only from the start."""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import Any

import pytest

from canopy.api.compute import field_limits as fl
from canopy.api.errors import ApiError
from canopy.api.http import json_depth
from canopy.network import ipam

NAMES = [
    ("plain", "web-1", True),
    ("unicode letters", "wébserver ☃", True),
    ("inner space", "my server", True),
    ("NUL", "a\x00b", False),
    ("escape sequence", "a\x1b[2Jb", False),
    ("bell", "a\x07", False),
    ("right-to-left override", "a\u202eb", False),
    ("line separator", "a\u2028b", False),
    ("new line", "a\nb", False),
    ("leading space", " a", False),
    ("empty", "", False),
    ("too long", "n" * 256, False),
    ("not a string", 5, False),
]


@pytest.mark.parametrize("label,value,ok", NAMES, ids=[n[0] for n in NAMES])
def test_names(label: str, value: Any, ok: bool) -> None:
    if ok:
        assert fl.check_name(value) == value
    else:
        with pytest.raises(ApiError) as err:
            fl.check_name(value)
        assert err.value.status == 400 and "name" in err.value.message


METADATA = [
    ("empty", {}, None),
    ("128 items", {f"k{i}": "v" for i in range(128)}, None),
    ("129 items", {f"k{i}": "v" for i in range(129)}, 403),
    ("255-char key and value", {"k" * 255: "v" * 255}, None),
    ("256-char key", {"k" * 256: "v"}, 400),
    ("256-char value", {"k": "v" * 256}, 400),
    ("empty key", {"": "v"}, 400),
    ("key with a slash", {"a/b": "v"}, 400),
    ("non-string value", {"k": 1}, 400),
    ("not an object", ["k"], 400),
]


@pytest.mark.parametrize("label,meta,status", METADATA, ids=[m[0] for m in METADATA])
def test_metadata(label: str, meta: Any, status: int | None) -> None:
    if status is None:
        assert fl.check_metadata(meta) == meta
    else:
        with pytest.raises(ApiError) as err:
            fl.check_metadata(meta)
        assert err.value.status == status


TAGS = [
    ("50 tags", [f"t{i}" for i in range(50)], True),
    ("51 tags", [f"t{i}" for i in range(51)], False),
    ("60 chars", ["t" * 60], True),
    ("61 chars", ["t" * 61], False),
    ("slash", ["a/b"], False),
    ("comma", ["a,b"], False),
    ("empty", [""], False),
    ("escape", ["\x1b"], False),
]


@pytest.mark.parametrize("label,tags,ok", TAGS, ids=[t[0] for t in TAGS])
def test_tags(label: str, tags: list[str], ok: bool) -> None:
    if ok:
        assert fl.check_tags(tags) == tags
    else:
        with pytest.raises(ApiError):
            fl.check_tags(tags)


@pytest.mark.parametrize("value,version,ok", [
    ("192.0.2.1", 4, True), ("", 4, True), (None, 6, True), ("2001:db8::1", 6, True),
    ("not-an-ip", 4, False), ("2001:db8::1", 4, False), ("192.0.2.1", 6, False), (7, 4, False),
])
def test_access_ips(value: Any, version: int, ok: bool) -> None:
    if ok:
        assert fl.check_access_ip(value, version) == value
    else:
        with pytest.raises(ApiError):
            fl.check_access_ip(value, version)


@pytest.mark.parametrize("value,depth", [(1, 0), ({}, 1), ([[]], 2), ({"a": [{"b": 1}]}, 3)])
def test_json_depth(value: Any, depth: int) -> None:
    assert json_depth(value, 32) == depth


def test_json_depth_stops_counting_past_the_limit() -> None:
    deep: list[Any] = []
    for _ in range(10_000):
        deep = [deep]
    assert json_depth(deep, 32) == 33


def _cursor(subnet: dict[str, Any]) -> ipam.PoolCursor:
    return ipam.CursorRegistry().get(subnet)


def test_the_cursor_never_proposes_the_gateway_or_a_dns_server_even_inside_the_pool() -> None:
    subnet = {"id": "s", "ip_version": 4, "gateway_ip": "10.0.0.2", "dns_nameservers": ["10.0.0.3"],
              "allocation_pools": [{"start": "10.0.0.1", "end": "10.0.0.6"}]}
    cursor = _cursor(subnet)
    proposed = []
    while (value := cursor.propose()) is not None:
        proposed.append(cursor.ranges.text(value))
    assert sorted(proposed) == ["10.0.0.1", "10.0.0.4", "10.0.0.5", "10.0.0.6"]
    cursor.resync([])  # what the database says is taken: the reserved stay reserved
    cursor.release(int(ipam.ipaddress.ip_address("10.0.0.3")))
    again = {cursor.ranges.text(v) for v in iter(cursor.propose, None)}
    assert again == {"10.0.0.1", "10.0.0.4", "10.0.0.5", "10.0.0.6"}


def test_a_subnet_whose_dns_server_changes_gets_a_new_cursor() -> None:
    reg = ipam.CursorRegistry()
    subnet = {"id": "s", "ip_version": 4, "gateway_ip": None, "dns_nameservers": [],
              "allocation_pools": [{"start": "10.0.0.1", "end": "10.0.0.6"}]}
    first = reg.get(subnet)
    assert reg.get({**subnet, "dns_nameservers": ["10.0.0.4"]}) is not first


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture
def open_umask() -> Any:
    old = os.umask(0)  # the worst case: nothing masked
    yield
    os.umask(old)


def test_the_data_folder_secret_and_database_are_owner_only(tmp_path: Path, open_umask: None) -> None:
    from canopy.config import Settings
    from canopy.db.engine import make_engine

    data = tmp_path / "var"
    settings = Settings(data_dir=data).resolved()
    assert _mode(data) == 0o700
    assert _mode(data / "token-secret") == 0o600
    engine = make_engine(settings.database.global_url)
    with engine.begin() as conn:
        conn.exec_driver_sql("CREATE TABLE t (x INTEGER)")
    engine.dispose()
    assert _mode(data / "canopy.db") == 0o600


def test_an_existing_wide_folder_is_tightened(tmp_path: Path) -> None:
    from canopy.private_files import private_dir

    folder = tmp_path / "var"
    folder.mkdir(mode=0o755)
    os.chmod(folder, 0o755)
    private_dir(folder)
    assert _mode(folder) == 0o700


def test_clouds_yaml_is_owner_only_even_over_a_wide_file(tmp_path: Path, open_umask: None) -> None:
    from canopy.clouds import write_clouds_yaml

    path = tmp_path / "clouds.yaml"
    path.write_text("old")
    os.chmod(path, 0o644)
    write_clouds_yaml(path, "http://x/identity", "RegionOne", "secret", "demo")
    assert _mode(path) == 0o600
    assert "secret" in path.read_text()


def test_a_shared_sticky_folder_given_as_data_folder_is_not_closed(tmp_path: Path) -> None:
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o1777)  # as /tmp is: everyone's, sticky
    from canopy.private_files import private_dir

    private_dir(shared)
    assert shared.stat().st_mode & 0o7777 == 0o1777
