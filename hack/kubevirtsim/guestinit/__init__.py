"""The inside of a simulated guest: its PID 1, its systemd, its cloud-init, its guest agent.

A simulated VMI is a set of Linux namespaces, not a VM; something inside them must do what
a guest's init system, cloud-init and qemu-guest-agent do, or guestha's agent (a systemd
service that cloud-init installs) could not run there. This package is that something.

It runs in the guest from one zipapp (``bundle.py`` builds it once per simulator run, with
precompiled bytecode), under the host's python3 with ``-I -S``: standard library only, no
site-packages. Two programs share the zipapp:

- PID 1 (``pid1``): the private file system view, the cloud-init run (``cloudinit_runner``),
  the services (``units``, ``services``, ``processes``), the control socket the guest's
  commands talk to (``tools``, ``systemctl``), the qemu-guest-agent-like socket (``qga``).
- the guest's ``systemctl``, ``systemd-run``, ``journalctl`` and ``cloud-init`` commands:
  each call runs ``client`` alone, which imports nothing else of this package and nothing
  heavy from the standard library, and asks PID 1 over the control socket.

``env`` holds what PID 1's parts share (the programs' environment, the console).
``plan`` is the contract between the host (``kubevirtsim.cloudinit``, ``guesthost``) and the
guest: the files in a guest's folder and the cloud-init plan's step types, defined once.

This file imports nothing: the client's import of ``kubevirtsim.guestinit.client`` runs it.
"""
