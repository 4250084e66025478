//go:build tools

// Package controlplane pins the three programs (kube-apiserver, kubectl, etcd) this module builds; see build.sh.
package controlplane

import (
	_ "go.etcd.io/etcd/server/v3/etcdmain"
	_ "k8s.io/kubernetes/cmd/kube-apiserver/app"
	_ "k8s.io/kubectl/pkg/cmd"
)
