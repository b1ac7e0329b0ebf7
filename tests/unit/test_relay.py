"""The api's requests for an agent go through a conductor: the conductor's relay makes the agent's call,
and a failure says whether the host or the agent failed, with the agent's own message."""

from __future__ import annotations

import pytest

from canopy.conductor.relay import relay_to_agent
from canopy.rpc.base import NoRoute, RemoteError, Target
from canopy.rpc.calls import ConsoleText, GetConsoleOutput
from canopy.rpc.calls_mobility import AbortMigration
from canopy.rpc.calls_relay import AbortLiveMigration, AgentRefused, HostUnreachable, ReadConsole, relay_failure
from canopy.rpc.local import LocalTransport
from canopy.rpc.messages import Message


async def agent(msg: Message) -> Message:
    """A host's agent: the console it holds, an abort it refuses."""
    if isinstance(msg, GetConsoleOutput):
        return ConsoleText(output=f"{msg.instance_uuid} {msg.length}")
    assert isinstance(msg, AbortMigration)
    raise ValueError(f"no migration of {msg.instance_uuid} is running")


async def test_the_relay_answers_with_the_agents_reply() -> None:
    bus = LocalTransport()
    bus.serve(Target("agent", "hv-1"), agent)
    reply = await relay_to_agent(bus, ReadConsole(host="hv-1", instance_uuid="i-1", length=5))
    assert reply == ConsoleText(output="i-1 5")


async def test_an_agent_error_and_an_unreachable_host_are_told_apart() -> None:
    bus = LocalTransport()
    bus.serve(Target("agent", "hv-1"), agent)
    with pytest.raises(AgentRefused, match="ValueError: no migration of i-1 is running"):
        await relay_to_agent(bus, AbortLiveMigration(host="hv-1", instance_uuid="i-1"))
    with pytest.raises(HostUnreachable, match="nobody serves agent.hv-2"):
        await relay_to_agent(bus, ReadConsole(host="hv-2", instance_uuid="i-1"))


async def test_through_a_conductor_the_api_sees_the_same_words() -> None:
    """The api's call to a conductor that relays: the 409's words are those of a direct call."""
    bus = LocalTransport()
    bus.serve(Target("agent", "hv-1"), agent)

    async def conductor(msg: Message) -> Message:
        assert isinstance(msg, (ReadConsole, AbortLiveMigration))
        return await relay_to_agent(bus, msg)

    bus.serve(Target("conductor"), conductor)
    failures = []
    for ask in (AbortLiveMigration(host="hv-1", instance_uuid="i-1"), ReadConsole(host="hv-2", instance_uuid="i-1")):
        with pytest.raises(RemoteError) as caught:
            await bus.call(Target("conductor"), ask)
        failures.append(caught.value)
    assert relay_failure(failures[0], "hv-1") == "no migration of i-1 is running"
    assert relay_failure(failures[0], "hv-1", with_kind=True) == "ValueError: no migration of i-1 is running"
    assert relay_failure(failures[1], "hv-2") == "host hv-2 is unreachable (nobody serves agent.hv-2)"
    assert relay_failure(NoRoute("nobody serves conductor"), "hv-2").startswith("no conductor could reach host hv-2")
