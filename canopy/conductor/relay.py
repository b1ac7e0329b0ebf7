"""The api's requests for a host's agent, made by a conductor: read a guest's console, abort a live
migration. The conductor calls the agent and answers with its reply (see canopy/rpc/calls_relay.py)."""

from __future__ import annotations

from canopy.rpc.base import CallTimeout, NoRoute, RemoteError, Target, Transport
from canopy.rpc.calls import GetConsoleOutput
from canopy.rpc.calls_mobility import AbortMigration
from canopy.rpc.calls_relay import AGENT_TIMEOUT_S, AbortLiveMigration, AgentRefused, HostUnreachable, ReadConsole
from canopy.rpc.messages import Message


def agent_message(msg: ReadConsole | AbortLiveMigration) -> Message:
    """The agent's message for an api request."""
    if isinstance(msg, ReadConsole):
        return GetConsoleOutput(instance_uuid=msg.instance_uuid, length=msg.length)
    return AbortMigration(instance_uuid=msg.instance_uuid)


async def relay_to_agent(bus: Transport, msg: ReadConsole | AbortLiveMigration) -> Message:
    """Make the agent's call for the api; a failure says whether the host or the agent failed."""
    try:
        return await bus.call(Target("agent", msg.host), agent_message(msg), timeout=AGENT_TIMEOUT_S)
    except (NoRoute, CallTimeout) as exc:
        raise HostUnreachable(str(exc)) from None
    except RemoteError as exc:
        raise AgentRefused(str(exc)) from None
