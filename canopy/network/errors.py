"""Networking errors, named and coded as Neutron names them; the API renders them as NeutronError."""

from __future__ import annotations


class NetworkError(Exception):
    """A networking failure with an HTTP status and the Neutron type name clients see."""

    status = 500

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    @property
    def neutron_type(self) -> str:
        """The Neutron exception name (the class name)."""
        return type(self).__name__


class BadRequest(NetworkError):
    status = 400


class NotFound(NetworkError):
    status = 404


class Conflict(NetworkError):
    status = 409


class InvalidInput(BadRequest):
    """A request value that is malformed or out of range."""


class InvalidAllocationPool(BadRequest):
    """An allocation pool whose bounds are not addresses, or are reversed."""


class OutOfBoundsAllocationPool(BadRequest):
    """An allocation pool reaching outside the usable part of its subnet."""


class InvalidIpForSubnet(BadRequest):
    """A requested fixed IP that does not belong to the requested subnet."""


class InvalidIpForNetwork(BadRequest):
    """A requested fixed IP that belongs to none of the network's subnets."""


class OverlappingAllocationPools(Conflict):
    """Two allocation pools of one subnet share addresses."""


class GatewayConflictWithAllocationPools(Conflict):
    """The gateway address lies inside an allocation pool."""


class IpAddressAlreadyAllocated(Conflict):
    """A requested fixed IP that another port holds."""


class IpAddressGenerationFailure(Conflict):
    """No free address is left in the subnet's pools."""


class MacAddressInUse(Conflict):
    """A requested MAC address that another port holds."""


class PortExists(Conflict):
    """A port ID that is already taken."""


class NetworkInUse(Conflict):
    """A network that still has server ports."""


class SubnetInUse(Conflict):
    """A subnet that still has IP allocations."""


class TunnelIdInUse(Conflict):
    """A VXLAN segmentation ID used by another network."""


class FlatNetworkInUse(Conflict):
    """A physical network already carrying a flat network."""


class NetworkNotFound(NotFound):
    """A network that does not exist or is not visible to the caller."""


class SubnetNotFound(NotFound):
    """A subnet that does not exist or is not visible to the caller."""


class PortNotFound(NotFound):
    """A port that does not exist or is not visible to the caller."""


def invalid(field: str, reason: str) -> InvalidInput:
    """An InvalidInput naming the field, as Neutron words attribute errors."""
    return InvalidInput(f"Invalid input for {field}. Reason: {reason}")


class MacAddressGenerationFailure(NetworkError):
    """No free MAC address was found in a few random tries."""

    status = 503


class AddressPairAndPortSecurityRequired(Conflict):
    """Allowed address pairs on a port whose port security is off."""
