"""A cluster's certificates as tests hold them: its CA, the operator's client certificate,
the agents' serving certificates, and client certificates an agent must refuse.

Files in one folder, since the agent and ssl take paths. Issued by the test bed's CA code
(testbed.pki); the operator's name comes from the protocol (OPERATOR_NAME), as the agent
checks it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from guestha.protocol.constants import OPERATOR_NAME
from testbed.pki import KeyPair, issue, make_ca


@dataclass
class Pki:
    """A cluster CA (``ca_file``), the operator's client certificate (``operator``: cert and
    key paths), and two that must be refused: ``foreign`` (the operator's name from another
    CA) and ``wrong_cn`` (this CA, another name)."""

    folder: Path
    ca: KeyPair = field(init=False)

    def __post_init__(self) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        self.ca = make_ca("guestha-cluster-ca")
        self.ca_file = self.folder / "ca.crt"
        self.ca_file.write_bytes(self.ca.cert)
        self.operator = issue(self.ca, OPERATOR_NAME, client=True).write(self.folder, "operator")
        other_ca = make_ca("some-other-ca")
        self.foreign = issue(other_ca, OPERATOR_NAME, client=True).write(self.folder, "foreign")
        self.wrong_cn = issue(self.ca, "not-the-operator", client=True).write(
            self.folder, "wrong-cn"
        )

    def agent_keypair(self, member: str, address: str | None = None) -> KeyPair:
        """The serving certificate of one agent: named after its member (and address)."""
        ips = (address,) if address else ()
        return issue(self.ca, member, dns=(member,), ips=ips, server=True)

    def agent_cert(self, member: str, address: str) -> tuple[Path, Path]:
        """An agent's certificate and key, written to this folder: their paths."""
        return self.agent_keypair(member, address).write(self.folder, f"agent-{member}")
