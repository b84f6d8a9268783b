"""The local test bed: a real kube-apiserver and etcd built from Go modules, run as envtest does."""
