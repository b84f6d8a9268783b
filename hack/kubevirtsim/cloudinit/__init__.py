"""cloud-init for simulated guests, the host's side: user-data in, the guest's plan out.

A simulated guest host has no real cloud-init, yet guestha's injection must meet the same
rules a real guest applies to its user-data: the same formats (cloud-config, scripts, MIME
multipart, gzip), the same merging of cloud-config parts (``merge_how``), the same module
order. This package reads the user-data on the host (it may use PyYAML) and produces a plan
of plain steps (``kubevirtsim.guestinit.plan``) that the guest's PID 1 carries out with the
standard library only. It performs no I/O, so every rule here is unit-testable without root.

The pipeline, one module per stage: ``parts`` (MIME splitting, gzip, content types) ->
``merging`` (cloud-config parts merged by cloud-init's merge rules) -> ``consume`` (what
cloud-init makes of each part) -> ``modules`` (what each cloud-config module does with its
keys) -> ``planner`` (the steps of the whole boot, in cloud-init's module order).
"""
