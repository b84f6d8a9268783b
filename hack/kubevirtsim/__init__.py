"""kubevirtsim: a KubeVirt simulator for tests and development.

It stands in for virt-controller and virt-handler on a real kube-apiserver with KubeVirt's
real CRDs, talking to the apiserver only through the API, and boots each VMI as an
isolated guest host (`guesthost`) that runs the VMI's cloud-init. `python3 -m kubevirtsim`
runs it; see `simulator.py` for how the parts fit.
"""
