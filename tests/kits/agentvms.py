"""KubeVirt VMs whose cloud-init installs the agent, for the control-plane tests and the
channel benchmark: the user-data, the Secret that carries it, the VM, and the apiserver
access the operator's VSOCK transport uses.

The VM has a vsock device (`autoattachVSOCK`) and boots from a `cloudInitNoCloud.secretRef`
Secret (KubeVirt refuses inline user-data over 2048 bytes, and the agent bundle is larger).
"""

from __future__ import annotations

import base64
import os
from pathlib import Path
from typing import Any

from guestha.channel.transport import KubeAccess
from guestha.kubevirt import kubeconfig as kubeconfig_credentials
from guestha.protocol.constants import AGENT_PORT
from kits.interpreters import agent_python
from kits.pki import Pki
from kits.userdata import guest_user_data


def user_data(
    cluster: str, member: str, transport: str, pki: Pki, agent_bundle: bytes,
    port: int = AGENT_PORT,
) -> bytes:
    """The #cloud-config that installs and starts the agent (a fresh heartbeat key), with
    the channel over `transport` on `port`, as the injection will."""
    return guest_user_data(member, cluster, pki, agent_bundle, os.urandom(32), agent_python(),
                           port=port, transport=transport)


def userdata_secret(name: str, data: bytes) -> dict[str, Any]:
    """The Secret a VM's cloudInitNoCloud.secretRef names."""
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": name},
        "type": "Opaque",
        "data": {"userdata": base64.b64encode(data).decode()},
    }


def vm(name: str, secret: str) -> dict[str, Any]:
    """A runStrategy Always VM with a vsock device, booted from the user-data Secret."""
    return {
        "apiVersion": "kubevirt.io/v1",
        "kind": "VirtualMachine",
        "metadata": {"name": name},
        "spec": {
            "runStrategy": "Always",
            "template": {
                "metadata": {"labels": {"kubevirt.io/vm": name}},
                "spec": {
                    "terminationGracePeriodSeconds": 0,
                    "domain": {
                        "devices": {"autoattachVSOCK": True},
                        "memory": {"guest": "128Mi"},
                        "resources": {},
                    },
                    "volumes": [
                        {
                            "name": "cloudinitdisk",
                            "cloudInitNoCloud": {"secretRef": {"name": secret}},
                        }
                    ],
                },
            },
        },
    }


def kube_access(kubeconfig: Path) -> KubeAccess:
    """The apiserver access of a kubeconfig, as the operator's own client has it."""
    creds = kubeconfig_credentials.from_kubeconfig(kubeconfig)
    return KubeAccess.from_credentials(creds.server, creds.context, creds.headers(), creds.proxy)
