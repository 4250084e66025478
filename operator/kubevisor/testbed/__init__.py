"""Local infrastructure for development and tests: a real control plane, libvirtd hosts, guests."""
