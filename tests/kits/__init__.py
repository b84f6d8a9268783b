"""Test kits: the tooling that tests and benchmarks share to run real agents and guests.

Certificates (pki), the operator's side of the channel (client, events, cluster), agent
processes on this host (agentproc, lan, lanagents), guest hosts booted with the agent the
way the operator's injection installs it (guests, agentvms), and the waits and
interpreters they all use. None of it is a test.

Dependencies go one way: tests and benchmarks (hack/bench) import kits; kits import
guestha, the test bed and the simulator (hack/), never a test or a benchmark; guestha
imports none of them (an import-linter contract). pytest and mypy find this package
through "tests" on their paths (pyproject.toml); benchmarks through hack/bench/run.
"""
