"""The vSphere driver: `VsphereHypervisor`, one ESXi host of a vCenter as a `base.Hypervisor`.

`mapping` holds the pure part (the `vsphere://VCENTER[:PORT]/HOST` URI, faults, domain
XML to a VM's configuration, power states to libvirt's states and events); `driver` talks
to vCenter with pyvmomi.
"""

from kubevisor.drivers.vsphere.driver import VsphereHypervisor as VsphereHypervisor
from kubevisor.drivers.vsphere.mapping import SCHEME as SCHEME
