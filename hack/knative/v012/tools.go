//go:build tools

// Package tools pins the five upstream Knative Eventing v0.12.0 mains that build-v012.sh builds
// straight from the knative.dev/eventing module (the controller with its namespace, Broker,
// Trigger, Channel and Subscription reconcilers; the per-namespace broker ingress and filter;
// the InMemoryChannel controller and dispatcher), so `go mod tidy` keeps their dependencies.
package tools

import (
	_ "knative.dev/eventing/cmd/broker/filter"
	_ "knative.dev/eventing/cmd/broker/ingress"
	_ "knative.dev/eventing/cmd/controller"
	_ "knative.dev/eventing/cmd/in_memory/channel_controller"
	_ "knative.dev/eventing/cmd/in_memory/channel_dispatcher"
)
