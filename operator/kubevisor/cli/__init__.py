"""The kubevisor command line (also usable as the kubectl plugin kubectl-kubevisor)."""
