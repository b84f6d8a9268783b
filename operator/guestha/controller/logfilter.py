"""The operator's log without kopf's line per watch event.

kopf logs "Handler 'X' succeeded." at INFO after every call of an event handler. guestha's
event handlers (a VMI, a ServiceGroup, a Switchover changed) run on every watch event:
at 500 clusters that is 7,000 of a start's 9,500 log lines, which bury the lines an
administrator reads (fencing, failovers, refused requests). Those lines go to DEBUG
(`--verbose` shows them); a failure of the same handlers is still logged, and every other
handler's success too (they are rare, and kopf may post them as Events).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable

SUCCEEDED = re.compile(r"Handler '([^']+)' succeeded\.")


class QuietEventHandlers(logging.Filter):
    """Demote kopf's success line of the named event handlers to DEBUG."""

    def __init__(self, handler_ids: Iterable[str]) -> None:
        super().__init__()
        self.handler_ids = frozenset(handler_ids)

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno != logging.INFO or not record.name.startswith("kopf.objects"):
            return True
        match = SUCCEEDED.fullmatch(record.getMessage())
        if match is None or match.group(1) not in self.handler_ids:
            return True
        record.levelno, record.levelname = logging.DEBUG, "DEBUG"
        return logging.getLogger(record.name).isEnabledFor(logging.DEBUG)


def install(handler_ids: Iterable[str]) -> None:
    """Filter the root logger's handlers (where the operator's lines are written)."""
    quiet = QuietEventHandlers(handler_ids)
    for handler in logging.getLogger().handlers:
        handler.addFilter(quiet)
