"""The operator's log keeps what an administrator reads and drops kopf's line per watch
event (controller/logfilter.py)."""

from __future__ import annotations

import io
import logging
from collections.abc import Iterator

import kopf
import pytest

from guestha.controller import logfilter, main

pytestmark = pytest.mark.unit


@pytest.fixture
def log() -> Iterator[tuple[io.StringIO, logging.Logger]]:
    """The root logger as main() configures it, writing into a buffer."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    saved = root.level, root.handlers[:]
    root.handlers[:] = [handler]
    root.setLevel(logging.INFO)
    logfilter.install(main.EVENT_HANDLERS)
    try:
        yield stream, logging.getLogger("kopf.objects")
    finally:
        root.handlers[:] = saved[1]
        root.setLevel(saved[0])


def test_an_event_handlers_success_is_dropped_and_everything_else_kept(
        log: tuple[io.StringIO, logging.Logger]) -> None:
    stream, kopf_objects = log
    kopf_objects.info("Handler 'vmi_event' succeeded.")
    kopf_objects.info("Handler 'group_changed' succeeded.")
    kopf_objects.info("Handler 'cluster_deleted' succeeded.")
    kopf_objects.error("Handler 'vmi_event' failed with an exception and will try again "
                       "in 60 seconds: boom")
    logging.getLogger("guestha.controller.fencing").info("Handler 'vmi_event' succeeded.")
    lines = stream.getvalue().splitlines()
    assert lines == [
        "INFO kopf.objects: Handler 'cluster_deleted' succeeded.",
        "ERROR kopf.objects: Handler 'vmi_event' failed with an exception and will try "
        "again in 60 seconds: boom",
        "INFO guestha.controller.fencing: Handler 'vmi_event' succeeded.",
    ]


def test_verbose_shows_them_as_debug(log: tuple[io.StringIO, logging.Logger]) -> None:
    stream, kopf_objects = log
    logging.getLogger().setLevel(logging.DEBUG)
    kopf_objects.info("Handler 'switchover_created' succeeded.")
    assert stream.getvalue().splitlines() == [
        "DEBUG kopf.objects: Handler 'switchover_created' succeeded."]


def test_the_names_are_kopfs_event_handlers_ids() -> None:
    """A renamed handler would slip through the filter: the list is kopf's own registry's."""
    watching = kopf.get_default_registry()._watching.get_all_handlers()
    assert sorted(main.EVENT_HANDLERS) == sorted(h.id for h in watching)
