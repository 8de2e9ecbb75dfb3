//go:build tools

// Package tools pins the three upstream data-plane mains that build.sh builds straight from the
// knative.dev/eventing module, so `go mod tidy` keeps their dependencies in go.mod/go.sum.
package tools

import (
	_ "knative.dev/eventing/cmd/broker/filter"
	_ "knative.dev/eventing/cmd/broker/ingress"
	_ "knative.dev/eventing/cmd/in_memory/channel_dispatcher"
)
