"""kubevisor: virtual machines as Kubernetes custom resources, placed like Nova, run on libvirt."""

__version__ = "0.1.0"
