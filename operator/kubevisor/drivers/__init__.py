"""Hypervisor I/O behind one Protocol: libvirt, and an in-memory fake for handler tests."""
