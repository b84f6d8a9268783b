"""Access to KubeVirt's VirtualMachines and VirtualMachineInstances, and fencing."""
