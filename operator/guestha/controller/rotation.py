"""Certificates renewed before they expire, without restarting anything: each member's
serving certificate, put over the channel (PUT /v1/tls), and the operator's own client
certificate for the cluster.

Why here: cloud-init runs once per instance, so the certificate the injection wrote at
a member's first boot is never renewed by it, and a member whose certificate expired can
no longer be reached: the operator could neither command it nor take its vote. So a
member's certificate is re-issued (same CA, same names, the VMI's address) once
`guestha.protocol.tls.due` says so (two thirds of its lifetime, pki.ROTATE_AT) and put to
its agent, which serves new connections with it; what the agent reports (`status.tls`)
says when that is, and after a delivery the answer's validity is used until the agent's
next report says more. The operator's client certificate is renewed in the cluster's CA
Secret the same way (credentials.get_or_create, guarded by resourceVersion) and its new
TLS context used for new connections.

One attempt per member per pass at most; a refused or failed delivery is logged and tried
again at the next pass (at the latest the supervisor's resync, RESYNC_SECONDS), well
within the third of the lifetime that is left. `next_due` tells the supervisor when the
next certificate becomes due, so a short lifetime (the test hook
credentials.TEST_CERT_SECONDS_ENV) is honoured too.
"""

from __future__ import annotations

import datetime
import logging
import ssl
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field

from guestha.channel import pki
from guestha.channel.aio import AgentRefusal, ChannelError
from guestha.controller.credentials import ClusterCredentials
from guestha.controller.links import MemberLink
from guestha.protocol.tls import TlsStatus, TlsUpdate, parse_iso

log = logging.getLogger(__name__)

EVENT_ROTATED = "CertificateRotated"


def due_at(tls: TlsStatus, fraction: float = pki.ROTATE_AT) -> datetime.datetime:
    """Pure: when a certificate of this validity becomes due for rotation."""
    start = parse_iso(tls.not_before, "notBefore")
    end = parse_iso(tls.not_after, "notAfter")
    return start + (end - start) * fraction


def _utcnow() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


@dataclass
class Rotation:
    """One cluster's certificate renewals (see the module docstring)."""

    namespace: str
    cluster: str
    credentials: ClusterCredentials | None = None  # None: nothing is rotated (unit tests)
    renew: Callable[[], Awaitable[ClusterCredentials]] | None = None  # the CA Secret's
    use: Callable[[ssl.SSLContext], None] | None = None  # the operator's new context
    fraction: float = pki.ROTATE_AT
    clock: Callable[[], datetime.datetime] = _utcnow
    delivered: dict[str, TlsStatus] = field(default_factory=dict)  # run uid -> delivered
    next_due: float | None = None  # monotonic: when the next certificate becomes due

    def served(self, link: MemberLink) -> TlsStatus | None:
        """The certificate the member's agent serves, as far as the operator knows: the
        one it delivered to this run of the agent, else the agent's own report."""
        report = link.state.report
        known = self.delivered.get(link.uid or "")
        if report is not None and report.tls is not None and (
                known is None or report.tls.not_after >= known.not_after):
            return report.tls
        return known

    async def rotate(self, links: Mapping[str, MemberLink],
                     addresses: Mapping[str, str | None],
                     event: Callable[[str, str, str], None]) -> None:
        """One pass: renew what is due (the leader only calls this)."""
        if self.credentials is None:
            return
        now = self.clock()
        await self._operator(now)
        for uid in set(self.delivered) - {link.uid for link in links.values()}:
            del self.delivered[uid]
        soonest: datetime.datetime | None = None
        for name, link in sorted(links.items()):
            tls = self.served(link)
            if not link.reachable or tls is None:
                continue
            if not tls.due(now, self.fraction):
                at = due_at(tls, self.fraction)
                soonest = at if soonest is None else min(soonest, at)
                continue
            address = addresses.get(name)
            pair = self.credentials.issue_member(name, (address,) if address else ())
            try:
                applied = await link.commands.put_tls(TlsUpdate(pair.cert_pem.decode(),
                                                                pair.key_pem.decode()))
            except (AgentRefusal, ChannelError) as e:
                log.warning("%s/%s: certificate of %s not rotated: %s", self.namespace,
                            self.cluster, name, e)
                continue
            if link.uid:
                self.delivered[link.uid] = applied.tls
            log.info("%s/%s: certificate of %s rotated (was valid until %s, now until %s)",
                     self.namespace, self.cluster, name, tls.not_after, applied.tls.not_after)
            event("Normal", EVENT_ROTATED,
                  f"{name}'s certificate renewed over the channel, valid until "
                  f"{applied.tls.not_after} (the one before was valid until {tls.not_after})")
            at = due_at(applied.tls, self.fraction)
            soonest = at if soonest is None else min(soonest, at)
        self.next_due = None if soonest is None else \
            time.monotonic() + max(0.0, (soonest - now).total_seconds())

    async def _operator(self, now: datetime.datetime) -> None:
        """The operator's client certificate, renewed in the CA Secret when due."""
        assert self.credentials is not None
        if self.renew is None or self.use is None or not pki.due_for_rotation(
                self.credentials.operator_cert_pem, now, self.fraction):
            return
        try:
            renewed = await self.renew()
        except Exception as e:  # the API: tried again at the next pass
            log.warning("%s/%s: the operator's certificate not renewed: %s", self.namespace,
                        self.cluster, e)
            return
        self.credentials = renewed
        self.use(renewed.ssl_context())
        log.info("%s/%s: the operator's client certificate renewed (valid until %s)",
                 self.namespace, self.cluster, pki.expires(renewed.operator_cert_pem))
