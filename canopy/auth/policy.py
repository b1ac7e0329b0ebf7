"""Who may call which route: one table of rules, by route name, in a small rule language modelled on
oslo.policy's, with OpenStack's default personas (admin, member, reader; project- and system-scoped).

    rule    := term ("or" term)*            role:NAME       the token carries the role
    term    := factor ("and" factor)*       scope:KIND      project | domain | system | unscoped
    factor  := "not" factor | "(" rule ")"  rule:NAME       another rule of the table
             | "@" (always) | "!" (never)   KEY:%(param)s   a credential equals a path parameter
             | KEY:VALUE                    KEY:VALUE       a credential equals a literal

Credentials are the token's: user_id, project_id, domain_id, scope, roles. Targets are the route's path
parameters. The defaults are canopy/auth/policy_defaults.py; an operator's file (`[auth] policy_file`,
TOML or YAML, `name = "rule"`) overrides any of them. A route with no rule is refused (fail closed), and
`missing_rules` lists such routes for the route-walk test.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

from canopy.auth.policy_defaults import DEFAULTS

Creds = Mapping[str, Any]
Target = Mapping[str, Any]
Check = Callable[[Creds, Target, "Policy"], bool]
_TOKEN = re.compile(r"[^\s()]+%\(\w+\)s|\(|\)|[^\s()]+")


class PolicyError(Exception):
    """A rule that does not parse, or a route without a rule."""


def _atom(word: str) -> Check:
    if word == "@":
        return lambda c, t, p: True
    if word == "!":
        return lambda c, t, p: False
    kind, sep, value = word.partition(":")
    if not sep or not value:
        raise PolicyError(f"not a check: {word!r}")
    if kind == "rule":
        return lambda c, t, p: p.check(value, c, t)
    if kind == "role":
        return lambda c, t, p: value in c.get("roles", ())
    param = re.fullmatch(r"%\((\w+)\)s", value)
    if param:
        name = param.group(1)
        return lambda c, t, p: c.get(kind) is not None and str(c.get(kind)) == str(t.get(name, ""))
    return lambda c, t, p: str(c.get(kind)) == value


class _Parser:
    def __init__(self, text: str) -> None:
        self.words = _TOKEN.findall(text)
        self.pos = 0
        if not self.words:
            raise PolicyError("an empty rule (write @ to allow everyone)")

    def parse(self) -> Check:
        check = self._or()
        if self.pos != len(self.words):
            raise PolicyError(f"unexpected {self.words[self.pos]!r}")
        return check

    def _peek(self) -> str | None:
        return self.words[self.pos] if self.pos < len(self.words) else None

    def _or(self) -> Check:
        parts = [self._and()]
        while self._peek() == "or":
            self.pos += 1
            parts.append(self._and())
        return parts[0] if len(parts) == 1 else (lambda c, t, p: any(x(c, t, p) for x in parts))

    def _and(self) -> Check:
        parts = [self._not()]
        while self._peek() == "and":
            self.pos += 1
            parts.append(self._not())
        return parts[0] if len(parts) == 1 else (lambda c, t, p: all(x(c, t, p) for x in parts))

    def _not(self) -> Check:
        word = self._peek()
        if word is None:
            raise PolicyError("a rule ends too early")
        self.pos += 1
        if word == "not":
            inner = self._not()
            return lambda c, t, p: not inner(c, t, p)
        if word == "(":
            inner = self._or()
            if self._peek() != ")":
                raise PolicyError("a '(' is not closed")
            self.pos += 1
            return inner
        return _atom(word)


def parse_rule(text: str) -> Check:
    """A rule's text compiled to a check; PolicyError names what is wrong."""
    return _Parser(text).parse()


class Policy:
    """The rules by name, compiled once."""

    def __init__(self, rules: Mapping[str, str]) -> None:
        self.text = dict(rules)
        self._checks: dict[str, Check] = {}
        for name, text in self.text.items():
            try:
                self._checks[name] = parse_rule(text)
            except PolicyError as exc:
                raise PolicyError(f"policy rule {name!r} = {text!r}: {exc}") from None

    def knows(self, name: str) -> bool:
        return name in self._checks

    def check(self, name: str, creds: Creds, target: Target, depth: int = 0) -> bool:
        """Whether the credentials pass the named rule on the target; an unknown rule is refused."""
        check = self._checks.get(name)
        return check is not None and check(creds, target, self)

    def missing_rules(self, route_names: Iterable[str]) -> list[str]:
        """The route names the table has no rule for."""
        return sorted({n for n in route_names if n not in self._checks})


def read_overrides(path: str) -> dict[str, str]:
    """An operator's rules from a TOML or YAML file (`name = "rule"` / `name: rule`)."""
    text = Path(path).read_text()
    if path.endswith((".yaml", ".yml")):
        import yaml

        data = yaml.safe_load(text) or {}
    else:
        data = tomllib.loads(text)
    if not isinstance(data, dict) or not all(isinstance(v, str) for v in data.values()):
        raise PolicyError(f"{path}: expected a table of rule names to rule strings")
    return {str(k): v for k, v in data.items()}


def load_policy(path: str = "") -> Policy:
    """The default rules, overridden by the operator's file when one is configured."""
    rules = dict(DEFAULTS)
    if path:
        rules.update(read_overrides(path))
    return Policy(rules)
