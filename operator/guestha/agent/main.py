"""`guestha-agent --config /etc/guestha/agent.json`: the agent's command line.

Reads the identity file, starts every part (guestha.agent.agent.Agent), runs the main
loop until SIGTERM or SIGINT, then stops: the Failover groups are taken offline first,
and the watchdog is disarmed only when they are (else it stays armed, to reset the guest).
SIGHUP re-reads the TLS files (certificate rotation) for new connections.
Exit codes: 0 after a clean stop, 2 for a bad command line, identity file or state, 1 for
other failures at start-up, bundles.RESTART_EXIT_CODE (75) to be started again into a new
bundle (PUT /v1/bundle; the service manager's Restart=always does it).

Before anything else, a start from a bundle takes the launcher's step
(guestha.agent.bundles.BundleFiles.launch): it may exec a trial bundle, or roll one back.
A trial that got through Agent.start commits itself.

The two options are read by `parse_args`, not argparse: argparse (with gettext) would stay
in the agent's memory for its whole run, about a third of a megabyte, for one look at argv.
"""

from __future__ import annotations

import logging
import signal
import sys
import threading
from dataclasses import dataclass

from guestha.agent.agent import Agent
from guestha.agent.bundles import RESTART_EXIT_CODE, BundleFiles
from guestha.agent.store import StoreError
from guestha.protocol import TYPE_CHECKING
from guestha.protocol.fields import FieldError
from guestha.protocol.identity import IDENTITY_FILE, Identity

if TYPE_CHECKING:
    from typing import Any

    from guestha.agent.agent import Emit, Runner, RunnerFactory

log = logging.getLogger("guestha.agent")

LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")
USAGE = f"usage: guestha-agent [-h] [--config FILE] [--log-level {{{','.join(LOG_LEVELS)}}}]"
HELP = f"""{USAGE}

guestha's in-guest agent

options:
  -h, --help         show this help message and exit
  --config FILE      the identity file (default: {IDENTITY_FILE})
  --log-level LEVEL  one of {', '.join(LOG_LEVELS)} (default: INFO)
"""


class UsageError(Exception):
    """A command line the agent does not take; the message names the argument."""


@dataclass(frozen=True)
class Options:
    config: str = IDENTITY_FILE
    log_level: str = "INFO"
    help: bool = False


def parse_args(argv: list[str]) -> Options:
    """The options of `argv` (without the program name): `--config FILE`, `--log-level
    LEVEL` (each also as `--name=value`, the last one given wins) and `-h`/`--help`."""
    values = {"--config": IDENTITY_FILE, "--log-level": "INFO"}
    wants_help = False
    rest = list(argv)
    while rest:
        arg = rest.pop(0)
        if arg in ("-h", "--help"):
            wants_help = True
            continue
        name, equals, value = arg.partition("=")
        if name not in values:
            raise UsageError(f"unrecognized argument: {arg}")
        if not equals:
            if not rest:
                raise UsageError(f"argument {name}: expected one argument")
            value = rest.pop(0)
        values[name] = value
    if values["--log-level"] not in LOG_LEVELS:
        raise UsageError(f"argument --log-level: invalid choice: {values['--log-level']!r} "
                         f"(choose from {', '.join(LOG_LEVELS)})")
    return Options(values["--config"], values["--log-level"], wants_help)


def default_runner(state_dir: str, emit: Emit) -> Runner:
    from guestha.agent.groups import GroupRunner

    return GroupRunner(state_dir, emit)


def main(argv: list[str] | None = None, runner_factory: RunnerFactory = default_runner
         ) -> int:
    try:
        args = parse_args(sys.argv[1:] if argv is None else argv)
    except UsageError as e:
        print(f"{USAGE}\nguestha-agent: error: {e}", file=sys.stderr)
        return 2
    if args.help:
        print(HELP, end="")
        return 0
    logging.basicConfig(level=args.log_level, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        identity = Identity.load(args.config)
        bundle = BundleFiles.of_running(identity.state_dir)
        if bundle is not None:
            bundle.launch(list(sys.argv[1:] if argv is None else argv))
        agent = Agent(identity, runner_factory, bundle)
    except (FieldError, StoreError) as e:
        log.error("%s", e)
        return 2
    except OSError as e:
        log.error("cannot start: %s", e)
        return 1

    def stop(signum: int, frame: Any) -> None:
        log.info("signal %d: stopping", signum)
        agent.stop()

    def reload(signum: int, frame: Any) -> None:
        threading.Thread(target=agent.reload_tls, name="tls-reload", daemon=True).start()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGHUP, reload)
    try:
        agent.start()
    except OSError as e:
        log.error("cannot start: %s", e)
        agent.close()
        return 1
    if bundle is not None:
        bundle.commit(agent.version)
    try:
        agent.run()
    finally:
        agent.close()
    if agent.restarting:
        log.info("exiting to be started again (exit code %d)", RESTART_EXIT_CODE)
        return RESTART_EXIT_CODE
    log.info("stopped")
    return 0


if __name__ == "__main__":
    sys.exit(main())
