"""The libvirt driver: `LibvirtHypervisor`, one libvirt URI as a `base.Hypervisor`.

By concern: `errors` (libvirt's errors as the driver's), `facts` (pure parsers of states,
events and host capabilities), `connection` (libvirt's event loop thread, the supervised
connection and its thread pool), `migration` (flags, parameters, job statistics and
control), `stats` (bulk domain statistics) and `driver` (the domain operations).
"""

from kubevisor.drivers.libvirt.driver import LibvirtHypervisor as LibvirtHypervisor
