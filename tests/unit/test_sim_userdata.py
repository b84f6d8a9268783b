"""The simulator finds a VMI's cloud-init where KubeVirt does, and names bad fields."""

from __future__ import annotations

import base64
from typing import Any

import pytest

from kubevirtsim.userdata import (
    InvalidCloudInit,
    MissingSecret,
    cloud_init,
    hostname,
    referenced_secrets,
)

pytestmark = pytest.mark.unit


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def spec_with(source: dict[str, Any], kind: str = "cloudInitNoCloud") -> dict[str, Any]:
    return {
        "volumes": [
            {"name": "containerdisk", "containerDisk": {"image": "x"}},
            {"name": "cloudinitdisk", kind: source},
        ]
    }


def no_secrets(name: str) -> dict[str, Any] | None:
    return None


def test_inline_user_data_no_cloud() -> None:
    got = cloud_init(spec_with({"userData": "#!/bin/sh\necho hi\n"}), no_secrets)
    assert got is not None
    assert got.datasource == "NoCloud" and got.volume == "cloudinitdisk"
    assert got.user_data == b"#!/bin/sh\necho hi\n" and got.network_data is None


def test_base64_and_config_drive() -> None:
    got = cloud_init(
        spec_with(
            {"userDataBase64": b64("#cloud-config\n"), "networkDataBase64": b64("version: 2\n")},
            "cloudInitConfigDrive",
        ),
        no_secrets,
    )
    assert got is not None and got.datasource == "ConfigDrive"
    assert got.user_data == b"#cloud-config\n" and got.network_data == b"version: 2\n"


@pytest.mark.parametrize("key", ["userdata", "userData"])
def test_secret_ref_keys(key: str) -> None:
    secrets = {
        "ud": {"data": {key: b64("#cloud-config\nx: 1\n")}},
        "nd": {"data": {"networkData": b64("version: 1\n")}},
    }
    got = cloud_init(
        spec_with({"secretRef": {"name": "ud"}, "networkDataSecretRef": {"name": "nd"}}),
        secrets.get,
    )
    assert got is not None
    assert got.user_data == b"#cloud-config\nx: 1\n" and got.network_data == b"version: 1\n"


def test_missing_secret_names_the_field_and_secret() -> None:
    with pytest.raises(MissingSecret) as err:
        cloud_init(spec_with({"secretRef": {"name": "later"}}), no_secrets)
    assert err.value.secret == "later"
    assert err.value.field == "spec.volumes[1].cloudInitNoCloud.secretRef"


def test_secret_without_the_key_is_missing_too() -> None:
    with pytest.raises(MissingSecret, match="userdata or userData"):
        cloud_init(spec_with({"secretRef": {"name": "s"}}), {"s": {"data": {"x": ""}}}.get)


def test_invalid_base64_names_the_field() -> None:
    with pytest.raises(InvalidCloudInit) as err:
        cloud_init(spec_with({"userDataBase64": "not base64!"}), no_secrets)
    assert err.value.field == "spec.volumes[1].cloudInitNoCloud.userDataBase64"


def test_two_sources_are_refused() -> None:
    with pytest.raises(InvalidCloudInit, match="more than one"):
        cloud_init(spec_with({"userData": "a", "userDataBase64": b64("b")}), no_secrets)


def test_no_cloud_init_volume() -> None:
    assert cloud_init({"volumes": [{"name": "d", "emptyDisk": {}}]}, no_secrets) is None
    assert cloud_init({}, no_secrets) is None


def test_referenced_secrets_and_hostname() -> None:
    spec = spec_with({"secretRef": {"name": "a"}, "networkDataSecretRef": {"name": "b"}})
    assert referenced_secrets(spec) == {"a", "b"}
    assert hostname({"metadata": {"name": "vmi"}, "spec": {}}) == "vmi"
    assert hostname({"metadata": {"name": "vmi"}, "spec": {"hostname": "h"}}) == "h"
