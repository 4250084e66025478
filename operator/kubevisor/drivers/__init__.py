"""Hypervisor I/O behind one Protocol (`base.Hypervisor`): libvirt (`libvirt/`), vSphere
(`vsphere/`) and an in-memory fake for the agent's tests (`fake`), sharing the connection
supervisor (`supervisor`), event fan-out (`events`) and the KVM probe (`kvm`)."""
