// Command kube-apiserver is a thin wrapper that builds the upstream
// kube-apiserver from the k8s.io/kubernetes Go module (see ../README.md).
package main

import (
	"os"

	"k8s.io/component-base/cli"
	"k8s.io/kubernetes/cmd/kube-apiserver/app"
)

func main() {
	os.Exit(cli.Run(app.NewAPIServerCommand()))
}
