"""One active operator: the Lease elector against a real apiserver.

Electors run as the operator runs them (asyncio, guestha's REST client's calls in the
default executor) with a ServiceAccount that holds only the leader Role's rights in a
namespace of the test's own. Short leases (3 s) keep the tests quick; the rules do not
depend on the length.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from guestha.controller.leadership import Elector
from guestha.kubevirt import kubeapi

pytestmark = pytest.mark.controlplane

RBAC = Path(__file__).resolve().parents[2] / "manifests" / "base" / "rbac.yaml"
LEASE, RENEW, MARGIN, RETRY = 3, 1.0, 0.5, 0.2


@pytest.fixture
def lease_ns(kube: Any, tmp_path: Path) -> Iterator[tuple[str, Any]]:
    """A namespace with a ServiceAccount bound to the operator's leader Role (from the
    shipped manifests), and an API client with its token."""
    if kube.local is None:
        pytest.skip("needs the local control plane (ServiceAccount tokens)")
    name = f"lease-{uuid.uuid4().hex[:6]}"
    kube.kubectl("create", "namespace", name)
    role = next(d for d in yaml.safe_load_all(RBAC.read_text())
                if d and d["kind"] == "Role" and d["metadata"]["name"].endswith("-leader"))
    role["metadata"]["namespace"] = name
    kube.kubectl("apply", "-f", "-", input=json.dumps(role))
    kube.kubectl("-n", name, "create", "serviceaccount", "operator")
    kube.kubectl("-n", name, "create", "rolebinding", "leader",
                 f"--role={role['metadata']['name']}", f"--serviceaccount={name}:operator")
    token = kube.kubectl("-n", name, "create", "token", "operator").stdout.strip()
    config = tmp_path / "kubeconfig"
    kube.local.control_plane.write_token_kubeconfig(config, token, "operator")
    yield name, kubeapi.client_from_kubeconfig(str(config))
    kube.kubectl("delete", "namespace", name, "--wait=false")


def elector(ns: str, api: Any, identity: str, lease: int = LEASE) -> Elector:
    return Elector(ns, "guestha-operator", identity, lease, RENEW, margin=MARGIN,
                   retry_seconds=RETRY, client=api)


async def until(what: str, check: Any, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(0.02)


def holder(kube: Any, ns: str) -> dict[str, Any]:
    lease = json.loads(kube.kubectl("-n", ns, "get", "lease", "guestha-operator",
                                    "-o", "json").stdout)
    return dict(lease["spec"])


def test_two_electors_exactly_one_leads(kube: Any, lease_ns: tuple[str, Any]) -> None:
    ns, api = lease_ns

    async def scenario() -> None:
        a, b = elector(ns, api, "a"), elector(ns, api, "b")
        tasks = [asyncio.create_task(e.run()) for e in (a, b)]
        try:
            await asyncio.wait_for(asyncio.wait([asyncio.create_task(a.wait_leader()),
                                                 asyncio.create_task(b.wait_leader())],
                                                return_when=asyncio.FIRST_COMPLETED), 20)
            end = time.monotonic() + 3 * LEASE  # several renewals: never both, never none
            while time.monotonic() < end:
                assert [a.is_leader, b.is_leader].count(True) == 1
                await asyncio.sleep(0.05)
            leader = a if a.is_leader else b
            spec = holder(kube, ns)
            assert spec["holderIdentity"] == leader.identity
            assert spec["leaseTransitions"] == leader.epoch == 1
        finally:
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    asyncio.run(scenario())


def test_a_stopped_leader_is_replaced_after_expiry_with_a_higher_epoch(
    lease_ns: tuple[str, Any]
) -> None:
    ns, api = lease_ns

    async def scenario() -> None:
        first, second = elector(ns, api, "first"), elector(ns, api, "second")
        t1 = asyncio.create_task(first.run())
        await asyncio.wait_for(first.wait_leader(), 20)
        t2 = asyncio.create_task(second.run())
        await asyncio.sleep(LEASE + 1)
        assert first.is_leader and not second.is_leader  # a live leader keeps it
        t1.cancel()  # a crash: no release
        await asyncio.gather(t1, return_exceptions=True)
        first_deadline = first._deadline  # when it would have stopped acting by itself
        await asyncio.wait_for(second.wait_leader(), 4 * LEASE)
        took_over = time.monotonic()
        try:
            assert second.epoch == first.epoch + 1
            assert took_over > first_deadline  # no instant with two leaders acting
        finally:
            t2.cancel()
            await asyncio.gather(t2, return_exceptions=True)

    asyncio.run(scenario())


def test_a_leader_whose_writes_are_refused_steps_down(
    kube: Any, lease_ns: tuple[str, Any]
) -> None:
    """Its RoleBinding removed: every renewal is refused 403. It stops leading by its
    deadline, before any other replica could take over."""
    ns, api = lease_ns

    async def scenario() -> None:
        a = elector(ns, api, "a")
        changes: list[tuple[bool, int]] = []
        a.on_change(lambda leading, epoch: changes.append((leading, epoch)))
        task = asyncio.create_task(a.run())
        try:
            await asyncio.wait_for(a.wait_leader(), 20)
            await asyncio.to_thread(kube.kubectl, "-n", ns, "delete", "rolebinding", "leader")
            refused_from = time.monotonic()
            await until("the refused leader to step down", lambda: not a.is_leader, 2 * LEASE)
            assert time.monotonic() < refused_from + LEASE  # before the Lease could expire
            # is_leader turns False at the deadline by itself; the callbacks follow from
            # the renewal loop (its last try is bounded by that deadline), well inside the
            # margin left before the Lease could expire
            await until("the step-down callback", lambda: len(changes) == 2, 2 * LEASE)
            assert changes == [(True, 1), (False, 1)]
            assert time.monotonic() < refused_from + LEASE
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    asyncio.run(scenario())


def test_a_leader_whose_lease_was_taken_under_it_steps_down_at_once(
    kube: Any, lease_ns: tuple[str, Any]
) -> None:
    ns, api = lease_ns

    async def scenario() -> None:
        a = elector(ns, api, "a", lease=30)  # expiry far away: only the conflict can do it
        task = asyncio.create_task(a.run())
        try:
            await asyncio.wait_for(a.wait_leader(), 20)
            await asyncio.to_thread(
                kube.kubectl, "-n", ns, "patch", "lease", "guestha-operator", "--type=merge",
                "-p", '{"spec":{"holderIdentity":"intruder","leaseTransitions":9}}')
            await until("the leader to step down", lambda: not a.is_leader, 3 * RENEW)
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    asyncio.run(scenario())


def test_a_released_lease_is_taken_at_once(kube: Any, lease_ns: tuple[str, Any]) -> None:
    ns, api = lease_ns

    async def scenario() -> None:
        first, second = elector(ns, api, "first", lease=30), elector(ns, api, "second", 30)
        t1 = asyncio.create_task(first.run())
        await asyncio.wait_for(first.wait_leader(), 20)
        t2 = asyncio.create_task(second.run())
        try:
            await asyncio.sleep(1)
            t1.cancel()
            await asyncio.gather(t1, return_exceptions=True)
            await first.release()
            assert not first.is_leader
            # far sooner than the 30 s expiry: only the release explains it
            await asyncio.wait_for(second.wait_leader(), 10)
            assert second.epoch == 2 and holder(kube, ns)["holderIdentity"] == "second"
        finally:
            t2.cancel()
            await asyncio.gather(t2, return_exceptions=True)

    asyncio.run(scenario())


def test_a_deleted_lease_never_restarts_the_epoch_below_what_agents_saw(
        kube: Any, lease_ns: tuple[str, Any]) -> None:
    """Agents refuse an epoch older than the newest they saw (409 StaleEpoch): a Lease
    deleted by hand would lock every agent away from the next leader for ever. The
    floor is the highest epoch written into an InGuestCluster's status (the real
    controller.leader.epoch_floor, read from the apiserver); the new Lease starts above
    it, and so does a takeover of a Lease whose count is lower. (An operator running in
    the same session may rewrite the status written here: the test holds the elector to
    whatever floor it was given.)"""
    from guestha.controller.leader import epoch_floor

    ns, api = lease_ns
    admin = kubeapi.client_from_kubeconfig(str(kube.kubeconfig))
    kube.kubectl("-n", ns, "apply", "-f", "-", input=json.dumps({
        "apiVersion": "guestha.io/v1alpha1", "kind": "InGuestCluster",
        "metadata": {"name": "seen"}, "spec": {"members": [{"name": "a"}]}}))
    kube.kubectl("-n", ns, "patch", "igc", "seen", "--subresource=status", "--type=merge",
                 "-p", json.dumps({"status": {"epoch": 41}}))
    given: list[int] = []

    async def floor() -> int:
        given.append(await epoch_floor(admin))
        return given[-1]

    def elect(identity: str) -> Elector:
        return Elector(ns, "guestha-operator", identity, LEASE, RENEW, margin=MARGIN,
                       retry_seconds=RETRY, client=api, epoch_floor=floor)

    async def scenario() -> None:
        assert await floor() >= 1  # it reads the InGuestClusters' status
        first = elect("first")
        task = asyncio.create_task(first.run())
        try:
            await asyncio.wait_for(first.wait_leader(), 20)
            assert first.epoch == given[-1] + 1  # a Lease created anew starts above it
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        await first.release()
        # the Lease deleted and made again by hand with a low count, then taken
        kube.kubectl("-n", ns, "delete", "lease", "guestha-operator")
        kube.kubectl("-n", ns, "apply", "-f", "-", input=json.dumps({
            "apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
            "metadata": {"name": "guestha-operator"},
            "spec": {"leaseTransitions": 3, "leaseDurationSeconds": LEASE}}))
        second = elect("second")
        task = asyncio.create_task(second.run())
        try:
            await asyncio.wait_for(second.wait_leader(), 20)
            assert second.epoch == max(3, given[-1]) + 1
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    asyncio.run(scenario())


def test_a_release_after_a_renewal_it_did_not_see_still_frees_the_lease(
        kube: Any, lease_ns: tuple[str, Any]) -> None:
    """A renewal cancelled in flight (the task stopped at shutdown) still reaches the
    apiserver, so the elector's copy of the Lease is one version behind and its release
    got 409: the Lease then stayed held until it expired, and the other replica waited a
    whole lease (found by this file's release test, flaky under load). Here that renewal
    is made by hand, as the same holder; the release must still free the Lease."""
    ns, api = lease_ns

    async def scenario() -> None:
        first = elector(ns, api, "first", lease=30)
        task = asyncio.create_task(first.run())
        await asyncio.wait_for(first.wait_leader(), 20)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        kube.kubectl("-n", ns, "annotate", "lease", "guestha-operator", "renewed=by-hand")
        await first.release()
        assert holder(kube, ns).get("holderIdentity") in (None, "")

    asyncio.run(scenario())


def test_a_leader_keeps_its_lease_while_the_process_default_executor_is_busy(
    lease_ns: tuple[str, Any]
) -> None:
    """Found by hack/bench/operatorscale: with 500 clusters, a burst of status writes (each
    in the default executor) queued the renewal behind them past its deadline; the leader
    stepped down, its next epoch changed every cluster's status, the next burst queued the
    next renewal, and so on. The renewals must not wait for the process's other calls."""
    ns, api = lease_ns

    async def scenario() -> None:
        leader = elector(ns, api, "busy")
        task = asyncio.create_task(leader.run())
        await asyncio.wait_for(leader.wait_leader(), 20)
        changes: list[tuple[bool, int]] = []
        leader.on_change(lambda leading, epoch: changes.append((leading, epoch)))
        loop = asyncio.get_running_loop()
        # every worker of the default executor busy, more work queued behind them
        busy = [loop.run_in_executor(None, time.sleep, 2 * LEASE) for _ in range(64)]
        try:
            await asyncio.sleep(2 * LEASE)
            assert leader.is_leader and changes == []
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            for job in busy:
                job.cancel()

    asyncio.run(scenario())
