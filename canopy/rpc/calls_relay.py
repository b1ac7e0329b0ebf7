"""What the api asks of a host's agent goes through a conductor (the api never calls an agent): these
messages name the host, the conductor makes the agent's call and answers with the agent's reply.

A failure comes back as a RemoteError whose `kind` says which side failed: `HostUnreachable` (nobody
serves the host, or it did not answer in time) or `AgentRefused` (the agent's handler raised), with the
agent's own message."""

from __future__ import annotations

from typing import ClassVar

from canopy.rpc.base import BusError, RemoteError
from canopy.rpc.messages import Message

# The conductor's call to the agent; the api waits a little longer for the conductor's answer.
AGENT_TIMEOUT_S = 30.0
RELAY_TIMEOUT_S = AGENT_TIMEOUT_S + 5.0


class HostUnreachable(Exception):
    """The agent of the host could not be reached (no route, or no reply in time)."""


class AgentRefused(Exception):
    """The agent answered with an error; the message is the agent's, as "Kind: message"."""


class ReadConsole(Message):
    """A guest's serial console, its last `length` lines or all (call to a conductor; reply: ConsoleText)."""

    kind: ClassVar[str] = "read_console"
    host: str
    instance_uuid: str
    length: int | None = None


class AbortLiveMigration(Message):
    """Cancel a running live migration on its source host (call to a conductor; reply: Ack)."""

    kind: ClassVar[str] = "abort_live_migration"
    host: str
    instance_uuid: str


def relay_failure(exc: BusError, host: str, *, with_kind: bool = False) -> str:
    """What the api says when a relayed request failed: the host unreachable, or the agent's own error
    (`with_kind`: prefixed with its exception's class name, as "Kind: message")."""
    if isinstance(exc, RemoteError) and exc.kind == AgentRefused.__name__:
        return exc.message if with_kind else exc.message.partition(": ")[2]
    if isinstance(exc, RemoteError) and exc.kind == HostUnreachable.__name__:
        return f"host {host} is unreachable ({exc.message})"
    return f"no conductor could reach host {host} ({exc})"
