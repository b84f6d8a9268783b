"""A Debian guest image for the real-guest test tier: built with debootstrap, cached, booted
under qemu.

The guest tier proves what the simulator cannot: that guestha's user-data works with the
real cloud-init, the real systemd and the real qemu-guest-agent of a distribution users run.
`recipe` says what goes into the image (its cache key is a hash of it), `build` makes it
(once, atomically, under a lock), `seed` renders the NoCloud disk as virt-launcher would,
`qemu` is the command line and the small QMP and guest-agent clients.
`python3 -m guestimage build|path|boot` (with hack/ on PYTHONPATH) for developers.

Developer tooling: guestha never imports it; the test kits (tests/kits/qemuguest.py) and
benchmarks (hack/bench/guestboot.py) do.
"""
