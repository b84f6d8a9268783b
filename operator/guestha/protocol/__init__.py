"""The agent-operator contract: what both sides of the guest agent channel must agree on.

Standard library only and Python 3.9, because it ships inside the agent's zipapp; the
operator imports the same modules, so a state, an event kind, a default or a port is
spelled once. Nothing here does I/O.
"""
