"""The pure builders of a ServiceGroup's Service and EndpointSlices."""

from __future__ import annotations

from typing import Any

import pytest

from guestha.controller.endpoints import (
    InvalidService,
    desired_endpointslice,
    desired_objects,
    desired_service,
)

pytestmark = pytest.mark.unit


def sg(service: dict[str, Any] | None = None) -> dict[str, Any]:
    spec: dict[str, Any] = {"cluster": "web"}
    if service is not None:
        spec["service"] = service
    return {"metadata": {"name": "shop", "namespace": "apps", "uid": "u-1"}, "spec": spec}


OWNER = [{"apiVersion": "guestha.io/v1alpha1", "kind": "ServiceGroup", "name": "shop",
          "uid": "u-1", "controller": True}]


def test_no_spec_service_no_objects() -> None:
    assert desired_service(sg()) is None
    assert desired_objects(sg(), {"web-a": "10.0.0.1"}) == []
    with pytest.raises(InvalidService, match=r"spec\.service"):
        desired_endpointslice(sg(), {})


def test_service_is_selector_less_and_owned() -> None:
    service = desired_service(sg({"ports": [{"port": 80, "targetPort": 8080}]}))
    assert service == {
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": "shop", "namespace": "apps",
                     "labels": {"app.kubernetes.io/managed-by": "guestha"},
                     "ownerReferences": OWNER},
        "spec": {"type": "ClusterIP",
                 "ports": [{"port": 80, "targetPort": 8080, "protocol": "TCP"}]},
    }


def test_named_ports_and_a_service_name_of_its_own() -> None:
    body = sg({"name": "front", "ports": [{"name": "http", "port": 80, "targetPort": 8080},
                                          {"name": "dns", "port": 53, "protocol": "UDP"}]})
    service = desired_service(body)
    assert service is not None and service["metadata"]["name"] == "front"
    assert service["spec"]["ports"][1] == {"name": "dns", "port": 53, "targetPort": 53,
                                           "protocol": "UDP"}
    slice_ = desired_endpointslice(body, {})
    assert slice_["metadata"]["name"] == "front-guestha"
    assert slice_["metadata"]["labels"] == {
        "kubernetes.io/service-name": "front",
        "endpointslice.kubernetes.io/managed-by": "operator.guestha.io"}
    # the slice's ports are where the application listens: the target ports
    assert slice_["ports"] == [{"name": "http", "port": 8080, "protocol": "TCP"},
                               {"name": "dns", "port": 53, "protocol": "UDP"}]


def test_slice_lists_the_online_members_in_a_stable_order() -> None:
    body = sg({"ports": [{"port": 80}]})
    one = desired_endpointslice(body, {"web-b": "10.0.0.2", "web-a": "10.0.0.1"})
    two = desired_endpointslice(body, {"web-a": "10.0.0.1", "web-b": "10.0.0.2"})
    assert one == two
    assert [e["addresses"] for e in one["endpoints"]] == [["10.0.0.1"], ["10.0.0.2"]]
    assert one["endpoints"][0]["conditions"] == {"ready": True, "serving": True,
                                                 "terminating": False}
    assert one["endpoints"][0]["targetRef"]["name"] == "web-a"
    assert one["metadata"]["ownerReferences"] == OWNER
    assert desired_endpointslice(body, {})["endpoints"] == []  # nobody online: no endpoint


def test_address_families_get_a_slice_each() -> None:
    body = sg({"ports": [{"port": 80}]})
    objects = desired_objects(body, {"web-a": "10.0.0.1", "web-b": "fd00::2"})
    assert [(o["kind"], o.get("addressType")) for o in objects] == [
        ("Service", None), ("EndpointSlice", "IPv4"), ("EndpointSlice", "IPv6")]
    assert objects[2]["metadata"]["name"] == "shop-guestha-v6"
    assert [e["addresses"] for e in objects[2]["endpoints"]] == [["fd00::2"]]
    assert len(desired_objects(body, {"web-a": "10.0.0.1"})) == 2


@pytest.mark.parametrize(
    ("body", "addresses", "field"),
    [
        (sg({"ports": []}), {}, "spec.service.ports"),
        (sg({"ports": [{"targetPort": 80}]}), {}, r"spec.service.ports\[0\].port"),
        (sg({"ports": [{"port": 80}]}), {"web-a": "not-an-ip"}, r"addresses\[web-a\]"),
        ({"metadata": {"name": "shop"}, "spec": {"service": {"ports": [{"port": 80}]}}}, {},
         "metadata"),
    ],
)
def test_bad_input_names_the_field(body: dict[str, Any], addresses: dict[str, str],
                                   field: str) -> None:
    with pytest.raises(InvalidService, match=field):
        desired_objects(body, addresses)
