"""The NoCloud seed disk, as virt-launcher makes it for a VMI's cloudInitNoCloud volume.

virt-launcher writes `user-data`, `meta-data` (JSON: instance-id, local-hostname) and,
when the VMI has networkData, `network-config` into a folder and makes an ISO 9660 image
of it with the volume label `cidata` (with Joliet and Rock Ridge names; KubeVirt calls
xorrisofs). Here genisoimage makes the same kind of image from the same files:
cloud-init's NoCloud data source finds it by its label on any block device, and reads the
files by name. The user-data goes on the disk byte for byte, whatever it is (a
#cloud-config, a script, MIME multipart): what the guest's cloud-init makes of it is what
the test checks.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from guestimage.build import GuestImageError

VOLUME_LABEL = "cidata"


def kubevirt_instance_id(name: str, namespace: str) -> str:
    """The instance-id KubeVirt gives a VMI's NoCloud meta-data: NAME.NAMESPACE (the same
    across the VMI's restarts, so cloud-init's per-instance modules run once)."""
    return f"{name}.{namespace}"


@dataclass(frozen=True)
class Seed:
    """What a cidata disk carries."""

    user_data: bytes
    instance_id: str
    local_hostname: str
    network_config: bytes | None = None

    def files(self) -> dict[str, bytes]:
        """The disk's files by name."""
        if not self.instance_id:
            raise ValueError("instance_id: empty (cloud-init needs one to run at all)")
        meta = {"instance-id": self.instance_id}
        if self.local_hostname:
            meta["local-hostname"] = self.local_hostname
        files = {"user-data": self.user_data, "meta-data": json.dumps(meta).encode() + b"\n"}
        if self.network_config is not None:
            files["network-config"] = self.network_config
        return files


def write_iso(seed: Seed, path: Path) -> Path:
    """The seed as an ISO 9660 image labelled cidata, at `path`."""
    tool = shutil.which("genisoimage")
    if tool is None:
        raise GuestImageError("genisoimage is missing (bash hack/setup installs it)")
    with tempfile.TemporaryDirectory(prefix="cidata-") as folder:
        for name, data in seed.files().items():
            (Path(folder) / name).write_bytes(data)
        subprocess.run([tool, "-quiet", "-output", str(path), "-volid", VOLUME_LABEL,
                        "-joliet", "-rock", folder], check=True)
    return path
