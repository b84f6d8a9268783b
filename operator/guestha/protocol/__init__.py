"""The agent-operator contract: what both sides of the guest agent channel must agree on.

Standard library only and Python 3.9, because it ships inside the agent's zipapp; the
operator imports the same modules, so a state, an event kind, a default or a port is
spelled once. Nothing here does I/O (but `Identity.load`, which reads the identity file).

- constants: ports, the operator's certificate name, headers, transports
- states: resource, group, self-fence and peer states; group_state(), the rule
- events: event kinds; the events answer and its 410
- config: a group and its resources, with defaults, parsed strictly
- desired: the desired configuration of PUT /v1/config, with defaults; GET /v1/config
- identity: the identity file the injection renders and the agent reads
- commands: the command envelope (epoch, operationId) and the answers to commands
- status: the status report and health, typed
- keys: the heartbeat pair keys
- fields: the readers every `from_dict` uses, refusing bad input naming the field
"""

# The guard of typing-only imports in the agent's and the protocol's modules (`if
# TYPE_CHECKING:`), instead of typing's own: the agent never imports the typing module at
# run time, which would stay in its memory for good (about 0.4 MB on Python 3.9). mypy
# reads a block under this name as always taken; Python never runs it.
TYPE_CHECKING = False
