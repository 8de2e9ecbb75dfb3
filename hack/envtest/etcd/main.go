// Command etcd is a thin wrapper that builds the upstream etcd server from the
// go.etcd.io/etcd/server/v3 Go module (see ../README.md).
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() {
	etcdmain.Main(os.Args)
}
