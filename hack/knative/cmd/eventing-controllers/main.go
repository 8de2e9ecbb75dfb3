// Command eventing-controllers runs, in one process, the upstream Knative Eventing reconcilers
// the test mesh needs: Channel and Subscription (= cmd/controller's), the multi-tenant Broker and
// its Trigger reconciler (= cmd/mtchannel_broker's) and InMemoryChannel (=
// cmd/in_memory/channel_controller's, without its admission webhook).
//
// The reconciler code is upstream and unmodified; only the composition differs, because:
//   - cmd/controller also starts source/sink/transform reconcilers that need cert-manager CRDs
//     and a dozen *_IMAGE variables;
//   - cmd/controller and cmd/mtchannel_broker serve health probes on a hard-coded :8080, which
//     collides with each other and with the IMC dispatcher;
//   - cmd/in_memory/channel_controller also serves its webhook on :8443 (the dispatcher's).
//
// Health probes are disabled (no fixed port) and so is HA (one replica: no leader election).
package main

import (
	filteredFactory "knative.dev/pkg/client/injection/kube/informers/factory/filtered"
	"knative.dev/pkg/injection/sharedmain"
	"knative.dev/pkg/signals"

	"knative.dev/eventing/pkg/auth"
	"knative.dev/eventing/pkg/eventingtls"
	"knative.dev/eventing/pkg/reconciler/broker"
	mttrigger "knative.dev/eventing/pkg/reconciler/broker/trigger"
	"knative.dev/eventing/pkg/reconciler/channel"
	imccontroller "knative.dev/eventing/pkg/reconciler/inmemorychannel/controller"
	"knative.dev/eventing/pkg/reconciler/subscription"
)

func main() {
	ctx := signals.NewContext()
	ctx = filteredFactory.WithSelectors(ctx, auth.OIDCLabelSelector, eventingtls.TrustBundleLabelSelector)
	ctx = sharedmain.WithHealthProbesDisabled(ctx)
	ctx = sharedmain.WithHADisabled(ctx)
	sharedmain.MainWithContext(ctx, "eventing-controllers",
		channel.NewController,
		subscription.NewController,
		broker.NewController,
		mttrigger.NewController,
		imccontroller.NewController,
	)
}
