"""The operator process's one Lease elector (controller.leadership), started with kopf.

Every supervisor asks `is_leader()` before it acts and sends `epoch()` with every
command; a change of leadership wakes them all, so a new leader acts at once and a
deposed one stops at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

import kopf

from guestha.controller import metrics
from guestha.controller.leadership import Elector
from guestha.controller.wakeups import WAKEUPS
from guestha.kubevirt import kubeapi

log = logging.getLogger(__name__)

_ELECTOR: Elector | None = None
_TASK: asyncio.Task[None] | None = None


def is_leader() -> bool:
    return _ELECTOR is not None and _ELECTOR.is_leader


def epoch() -> int:
    return _ELECTOR.epoch if _ELECTOR is not None else 0


def _changed(leading: bool, new_epoch: int) -> None:
    log.info("leadership: %s (epoch %d)", "leading" if leading else "not leading", new_epoch)
    metrics.LEADER.set(1 if leading else 0)
    WAKEUPS.notify_all()


async def epoch_floor(client: Any = None) -> int:
    """The highest epoch an earlier leader wrote into an InGuestCluster's status: the
    agents may have seen it, and a Lease deleted and created again must not start
    below it (controller.leadership)."""
    listed = await kubeapi.call("GET", "/apis/guestha.io/v1alpha1/inguestclusters",
                                client=client)
    return max((int((item.get("status") or {}).get("epoch") or 0)
                for item in listed.get("items") or ()), default=0)


@kopf.on.startup()
async def start_election(**_: Any) -> None:
    global _ELECTOR, _TASK
    _ELECTOR = Elector(epoch_floor=epoch_floor)
    _ELECTOR.on_change(_changed)
    _TASK = asyncio.create_task(_ELECTOR.run(), name="guestha-leader-election")


@kopf.on.cleanup()
async def stop_election(**_: Any) -> None:
    """Release the Lease at a clean shutdown, so the other replica takes over at once."""
    if _TASK is not None:
        _TASK.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await _TASK
    if _ELECTOR is not None:
        await _ELECTOR.release()
