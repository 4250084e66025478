// Command vcsim serves the vSphere API simulator of github.com/vmware/govmomi/simulator.
//
// Upstream's vcsim command is a module of its own that the Go module proxy does not serve, so
// this is the small part of it kubevisor's tests need: a vCenter inventory (by default one
// datacenter, one standalone host, one cluster of three hosts, one datastore, two VMs per
// host) on one address, until SIGINT or SIGTERM. It prints the SDK URL (with the
// credentials it accepts) on stdout once it listens.
package main

import (
	"crypto/tls"
	"flag"
	"fmt"
	"log"
	"net/url"
	"os"
	"os/signal"
	"syscall"

	"github.com/vmware/govmomi/simulator"
)

func main() {
	model := simulator.VPX()
	listen := flag.String("l", "127.0.0.1:8989", "listen address")
	useTLS := flag.Bool("tls", true, "serve HTTPS (with the simulator's self-signed certificate)")
	username := flag.String("username", "user", "login user name")
	password := flag.String("password", "pass", "login password")
	flag.IntVar(&model.Datacenter, "dc", model.Datacenter, "datacenters")
	flag.IntVar(&model.Cluster, "cluster", model.Cluster, "clusters per datacenter")
	flag.IntVar(&model.ClusterHost, "host", model.ClusterHost, "hosts per cluster")
	flag.IntVar(&model.Host, "standalone-host", model.Host, "standalone hosts per datacenter")
	flag.IntVar(&model.Datastore, "ds", model.Datastore, "datastores per datacenter")
	flag.IntVar(&model.Machine, "vm", model.Machine, "VMs per host and per cluster")
	flag.BoolVar(&model.Autostart, "autostart", model.Autostart, "power on the inventory's VMs")
	flag.Parse()

	if err := model.Create(); err != nil {
		log.Fatal(err)
	}
	defer model.Remove()
	model.Service.Listen = &url.URL{Host: *listen, User: url.UserPassword(*username, *password)}
	if *useTLS {
		model.Service.TLS = new(tls.Config)
	}
	server := model.Service.NewServer()
	defer server.Close()
	fmt.Println(server.URL.String())

	stop := make(chan os.Signal, 1)
	signal.Notify(stop, os.Interrupt, syscall.SIGTERM)
	<-stop
}
