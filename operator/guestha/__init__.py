"""guestha: in-guest high availability for KubeVirt virtual machines, run by an operator."""

__version__ = "0.1.0"
