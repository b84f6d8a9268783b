"""Names and numbers both ends of the channel use: ports, the operator's certificate name,
the header that carries the operator's epoch."""

from __future__ import annotations

AGENT_PORT = 7480  # the channel (InGuestCluster spec.channel.port's default)
HEARTBEAT_PORT = 7481  # UDP heartbeats between agents
OPERATOR_NAME = "guestha-operator"  # the CN of the operator's client certificate
EPOCH_HEADER = "Guestha-Epoch"  # the operator's epoch, on every request (its quorum vote)
REPLAYED_HEADER = "Guestha-Replayed"  # "true" on the answer of an operation applied before
NETWORK = "Network"  # the channel over TCP to the guest's address
VSOCK = "VSOCK"  # the channel over the VM's vsock, through KubeVirt's websocket
TRANSPORTS = (NETWORK, VSOCK)  # InGuestCluster spec.channel.transport
