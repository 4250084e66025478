"""The host side of kubevisor Networks behind one Protocol (`base.HostNetwork`): Linux
(`linux`: links, bridges, VXLAN and FDB through pyroute2 in `netlink`, DHCP through dnsmasq in
`dnsmasq`, port security through nftables in `nftables`) and an in-memory fake for the
agent's tests (`fake`). What to build comes from `core.network.hostplan`."""
