"""`guestha-agent --config /etc/guestha/agent.json`: the agent's command line.

Reads the identity file, starts every part (guestha.agent.agent.Agent), runs the main
loop until SIGTERM or SIGINT, then stops: the Failover groups are taken offline first,
and the watchdog is disarmed only when they are (else it stays armed, to reset the guest).
SIGHUP re-reads the TLS files (certificate rotation) for new connections.
Exit codes: 0 after a clean stop, 2 for a bad identity file or state, 1 for other failures
at start-up, bundles.RESTART_EXIT_CODE (75) to be started again into a new bundle
(PUT /v1/bundle; the service manager's Restart=always does it).

Before anything else, a start from a bundle takes the launcher's step
(guestha.agent.bundles.BundleFiles.launch): it may exec a trial bundle, or roll one back.
A trial that got through Agent.start commits itself.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
from typing import Any

from guestha.agent.agent import Agent, Emit, Runner, RunnerFactory
from guestha.agent.bundles import RESTART_EXIT_CODE, BundleFiles
from guestha.agent.store import StoreError
from guestha.protocol.fields import FieldError
from guestha.protocol.identity import IDENTITY_FILE, Identity

log = logging.getLogger("guestha.agent")


def default_runner(state_dir: str, emit: Emit) -> Runner:
    from guestha.agent.groups import GroupRunner

    return GroupRunner(state_dir, emit)


def main(argv: list[str] | None = None, runner_factory: RunnerFactory = default_runner
         ) -> int:
    parser = argparse.ArgumentParser(prog="guestha-agent",
                                     description="guestha's in-guest agent")
    parser.add_argument("--config", default=IDENTITY_FILE,
                        help="the identity file (default: %(default)s)")
    parser.add_argument("--log-level", default="INFO",
                        choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    args = parser.parse_args(argv)
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
