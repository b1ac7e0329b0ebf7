"""The pure cores of identity: the policy rule language, the revocation index, the login throttle."""

from __future__ import annotations

import pytest

from canopy.auth.policy import Policy, PolicyError, load_policy, parse_rule
from canopy.auth.revocation import RevocationEvent, RevocationIndex
from canopy.auth.throttle import LoginThrottle
from canopy.auth.tokens import TokenData, TokenSigner
from canopy.clock import FakeClock

MEMBER = {"user_id": "u1", "project_id": "p1", "roles": ("member", "reader"), "scope": "project"}
READER = {"user_id": "u2", "project_id": "p1", "roles": ("reader",), "scope": "project"}
ADMIN = {"user_id": "a", "project_id": "pa", "roles": ("admin", "member", "reader"), "scope": "project"}
DOMAIN_ADMIN = {"user_id": "d", "domain_id": "d1", "roles": ("admin",), "scope": "domain"}


@pytest.mark.parametrize(("rule", "creds", "target", "want"), [
    ("@", {}, {}, True),
    ("!", ADMIN, {}, False),
    ("role:member", MEMBER, {}, True),
    ("role:member", READER, {}, False),
    ("role:reader and project_id:%(project_id)s", READER, {"project_id": "p1"}, True),
    ("role:reader and project_id:%(project_id)s", READER, {"project_id": "p2"}, False),
    ("not role:admin", MEMBER, {}, True),
    ("(role:admin or role:member) and scope:project", MEMBER, {}, True),
    ("rule:admin", DOMAIN_ADMIN, {}, False),
    ("rule:project_member", READER, {}, False),
    ("user_id:%(user_id)s", MEMBER, {}, False),
])
def test_rules(rule: str, creds: dict[str, object], target: dict[str, str], want: bool) -> None:
    policy = Policy({**load_policy().text, "x": rule})
    assert policy.check("x", creds, target) is want


@pytest.mark.parametrize("bad", ["", "role:", "(role:a", "role:a or", "role:a role:b", "nonsense"])
def test_bad_rules_are_refused_with_a_reason(bad: str) -> None:
    with pytest.raises(PolicyError):
        parse_rule(bad)


def test_unknown_rule_is_refused_and_listed() -> None:
    policy = load_policy()
    assert not policy.check("compute:nothing", ADMIN, {})
    assert policy.missing_rules(["compute:nothing", "compute:servers:index"]) == ["compute:nothing"]


def test_operator_file_overrides(tmp_path: object) -> None:
    from pathlib import Path
    path = Path(str(tmp_path)) / "policy.toml"
    path.write_text('"compute:servers:create" = "rule:admin"\n')
    policy = load_policy(str(path))
    assert not policy.check("compute:servers:create", MEMBER, {})
    assert policy.check("compute:servers:create", ADMIN, {})


def _token(**over: object) -> TokenData:
    base: dict[str, object] = {"user_id": "u", "project_id": "p", "roles": (), "issued_at": 100.0,
                               "expires_at": 200.0, "audit_id": "A", "domains": ("default",)}
    base.update(over)
    return TokenData(**base)  # type: ignore[arg-type]


@pytest.mark.parametrize(("event", "token", "revoked"), [
    (RevocationEvent(150, audit_id="A"), _token(), True),
    (RevocationEvent(150, audit_id="A"), _token(audit_id="B", parent_audit_id="A"), True),
    (RevocationEvent(150, audit_id="A"), _token(audit_id="B"), False),
    (RevocationEvent(150, user_id="u"), _token(), True),
    (RevocationEvent(50, user_id="u"), _token(), False),      # issued after the event: stands
    (RevocationEvent(150, user_id="u", project_id="p"), _token(project_id="q"), False),
    (RevocationEvent(150, project_id="p"), _token(), True),
    (RevocationEvent(150, domain_id="default"), _token(), True),
    (RevocationEvent(150, domain_id="d1"), _token(project_id="", domain_id="d1"), True),
    (RevocationEvent(150, app_cred_id="c"), _token(), False),
    (RevocationEvent(150, app_cred_id="c"), _token(app_cred_id="c"), True),
])
def test_revocation_index(event: RevocationEvent, token: TokenData, revoked: bool) -> None:
    index = RevocationIndex([event])
    index.add([event])  # idempotent
    assert index.is_revoked(token) is revoked


def test_rescoped_token_never_outlives_its_parent() -> None:
    from canopy.auth.tokens import Scope, TokenRequest
    signer = TokenSigner("s", ttl_s=3600)
    _, parent = signer.issue("u", "", (), now=1000.0)
    token, child = signer.issue_for(TokenRequest("u", Scope("p"), ("member",), ("token",), parent=parent), now=3000.0)
    assert child.expires_at == parent.expires_at
    assert signer.validate(token, now=3001.0).audit_chain == (child.audit_id, parent.audit_id)


def test_non_ascii_token_is_invalid_not_an_error() -> None:
    from canopy.auth.tokens import InvalidToken
    with pytest.raises(InvalidToken):
        TokenSigner("s", 60).validate("é.x")


def test_throttle_per_user_and_source() -> None:
    clock = FakeClock()
    t = LoginThrottle(per_user=3, per_source=5, window_s=60, monotonic=clock.monotonic)
    for _ in range(3):
        assert t.retry_after("bob", "1.2.3.4") == 0
        t.failed("bob", "1.2.3.4")
    assert t.retry_after("bob", "9.9.9.9") == pytest.approx(60)
    assert t.retry_after("amy", "1.2.3.4") == 0
    t.failed("amy", "1.2.3.4")
    t.failed("cat", "1.2.3.4")
    assert t.retry_after("dan", "1.2.3.4") > 0          # the source is over its limit
    clock.advance(61)
    assert t.retry_after("bob", "1.2.3.4") == 0
    t.failed("eve", "5.5.5.5")
    t.succeeded("eve")
    assert t.retry_after("eve", "6.6.6.6") == 0
