"""The pure parts of issue 16's compute conformance, by tables: admin passwords, access IPs, tags,
Nova's binary names, the audit period, the versions document, the task payload's new arguments."""

from __future__ import annotations

import datetime as dt

import pytest

from canopy import states
from canopy.api.compute.common import generate_password
from canopy.api.compute.field_limits import check_access_ip
from canopy.api.compute.os_services import canopy_binary
from canopy.api.compute.server_tags import check_tag, check_tags
from canopy.api.compute.usage_audit_log import audit_period, parse_before, render_audit
from canopy.api.compute.versions import v20_document
from canopy.api.errors import ApiError
from canopy.rpc.tasks import ActionPayload, dump_payload, parse_payload


@pytest.mark.parametrize("length", [8, 12, 40])
def test_generated_passwords_have_the_length_and_every_group(length: int) -> None:
    for _ in range(50):
        password = generate_password(length)
        assert len(password) == length
        assert any(ch.isdigit() for ch in password) and any(ch.isupper() for ch in password)
        assert any(ch.islower() for ch in password) and not set(password) & set("01lIO")


@pytest.mark.parametrize("value,version,ok", [
    ("1.1.1.1", 4, "1.1.1.1"), ("2001:db8::1", 6, "2001:db8::1"), ("2001:DB8:0::1", 6, "2001:db8::1"),
    ("1.1.1.1", 6, None), ("2001:db8::1", 4, None), ("300.1.1.1", 4, None), (5, 4, None),
    ("", 4, ""), (None, 6, "none")])  # empty or null: no address (unset)
def test_access_ips(value: object, version: int, ok: str | None) -> None:
    if ok == "none":
        assert check_access_ip(value, version) is None
    elif ok is None:
        with pytest.raises(ApiError) as err:
            check_access_ip(value, version)
        assert err.value.status == 400 and f"accessIPv{version}" in err.value.message
    else:
        assert check_access_ip(value, version) == ok


@pytest.mark.parametrize("tag,ok", [("web", True), ("x" * 60, True), ("x" * 61, False), ("", False), ("a/b", False),
                                    ("a,b", False), (7, False), ("déjà vu", True)])
def test_tags(tag: object, ok: bool) -> None:
    if ok:
        assert check_tag(tag) == tag
    else:
        with pytest.raises(ApiError):
            check_tag(tag)


def test_tag_lists_drop_duplicates_and_stop_at_50() -> None:
    assert check_tags(["a", "b", "a"]) == ["a", "b"]
    assert len(check_tags([f"t{i}" for i in range(50)])) == 50
    with pytest.raises(ApiError, match="limit 50"):
        check_tags([f"t{i}" for i in range(51)])


@pytest.mark.parametrize("given,canopy", [("nova-compute", "canopy-agent"), ("nova-conductor", "canopy-conductor"),
                                          ("nova-scheduler", "canopy-scheduler"), ("canopy-agent", "canopy-agent"),
                                          ("nova-api", "nova-api")])
def test_nova_binary_names(given: str, canopy: str) -> None:
    assert canopy_binary(given) == canopy


@pytest.mark.parametrize("before,begin,end", [
    (dt.datetime(2026, 3, 1, 12), dt.datetime(2026, 2, 1), dt.datetime(2026, 3, 1)),
    (dt.datetime(2026, 1, 15), dt.datetime(2025, 12, 1), dt.datetime(2026, 1, 1)),
    (dt.datetime(2026, 3, 1), dt.datetime(2026, 2, 1), dt.datetime(2026, 3, 1))])
def test_audit_period_is_the_last_complete_month(before: dt.datetime, begin: dt.datetime, end: dt.datetime) -> None:
    assert audit_period(before) == (begin, end)


def test_audit_timestamps_and_body() -> None:
    assert parse_before("2026-01-15 10:00:00.5") == dt.datetime(2026, 1, 15, 10, 0, 0, 500000)
    with pytest.raises(ApiError):
        parse_before("2026-01-15")
    body = render_audit(["a"], dt.datetime(2026, 1, 1), dt.datetime(2026, 2, 1))
    assert body["overall_status"] == "0 of 1 hosts done. 0 errors." and body["num_hosts_not_run"] == 1


def test_v20_comes_without_microversions() -> None:
    doc = v20_document("http://x/compute")
    assert (doc["id"], doc["status"], doc["version"], doc["min_version"]) == ("v2.0", "SUPPORTED", "", "")


@pytest.mark.parametrize("action,from_states", [
    ("shelve", {"active", "stopped", "paused", "suspended"}), ("shelve_offload", {"shelved"}),
    ("unshelve", {"shelved", "shelved_offloaded"}), ("backup", {"active", "stopped", "paused", "suspended"})])
def test_shelve_and_backup_start_from_novas_states(action: str, from_states: set[str]) -> None:
    assert set(states.ACTIONS[action].from_vm_states) == from_states
    assert {states.SHELVED, states.SHELVED_OFFLOADED} <= set(states.ACTIONS["delete"].from_vm_states)


@pytest.mark.parametrize("vm_state,status", [("shelved", "SHELVED"), ("shelved_offloaded", "SHELVED_OFFLOADED")])
def test_shelved_statuses(vm_state: str, status: str) -> None:
    assert states.status_of(vm_state, None) == status


def test_new_action_arguments_survive_the_task_row() -> None:
    payload = ActionPayload(image_id="i", backup_type="daily", rotation=2, offload=True, port_id="p",
                            availability_zone="az", admin_pass="pw")
    again = parse_payload("backup", dump_payload(payload))
    assert again == payload
    assert "rotation" not in dump_payload(ActionPayload())  # unset arguments stay out of the row
