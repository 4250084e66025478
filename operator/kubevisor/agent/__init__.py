"""The node agent: registers its HypervisorHost and converges libvirt to the VMs bound to it."""
