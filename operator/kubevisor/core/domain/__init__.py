"""VirtualMachine spec + placement decision -> libvirt domain XML, one module per concern.

- `converter`: the entry point, `render(vm, host=...)`, and the limits a host cannot
  enforce (`unenforced_limits`).
- `host`: what the agent knows of its host (`HostEnvironment`, `Ovmf`, `BootFiles`,
  `DomainType`).
- `identity`: which VM a domain belongs to (`VmRef`, `read_metadata`) and the spec it was
  made from (`hardware_fingerprint`).
- `document`: the document under construction and `DomainError`.
- `vm` and `container`: the configurators of a VM's domain and of a system container's,
  in order; the VM's are grouped by element in `general`, `memory`, `cpu`, `firmware`
  and `devices`, as KubeVirt's converter groups its own.

Callers import the module they need; this package re-exports nothing.
"""
