"""Kyma 1.x (1.11-1.20, Knative Eventing v0.12): the seed's topology.

Every link mirrors a row of the wiring table: one per resource in an
Application's event flow, listed upstream first. The analysis resolves a link's
`parent` and `expected` gate before the link itself.
"""

from __future__ import annotations

from eventmesh_health.topology import (
    ByField,
    ByLabels,
    ByName,
    ByOwner,
    ByPairLabels,
    ByReference,
    ByServiceClass,
    Component,
    DataHop,
    DataPlane,
    Expect,
    Judge,
    Kind,
    Link,
    NamespaceSource,
    ObjectAt,
    Profile,
    Scope,
)
from eventmesh_health.topology.core import (
    CORE_KINDS,
    DEPLOYMENT,
    MUTATING_WEBHOOK,
    NAMESPACE,
    STATEFULSET,
    VALIDATING_WEBHOOK,
)

INTEGRATION_NS = "kyma-integration"

# --- kinds --------------------------------------------------------------------------------
APPLICATION = Kind(
    "applicationconnector.kyma-project.io/v1alpha1", "Application", "applications", False,
    fields=("spec.services[].id", "spec.services[].entries[].type", "spec.skipInstallation",
            "status.installationStatus"),
)
APPLICATION_MAPPING = Kind(
    "applicationconnector.kyma-project.io/v1alpha1", "ApplicationMapping", "applicationmappings",
    fields=("spec.services[].id",),
)
EVENT_ACTIVATION = Kind(
    "applicationconnector.kyma-project.io/v1alpha1", "EventActivation", "eventactivations",
    fields=("spec.sourceId", "spec.displayName"),
)
# Which controllers write status.observedGeneration (docs/reference/kyma1-knative-shapes.md,
# "Who writes status.observedGeneration"; kyma1-kyma-shapes.md §3): Broker, Trigger,
# Subscription (knative/eventing@v0.12.0:pkg/reconciler/{broker,trigger,subscription}) and the
# Knative Service (knative/serving@v0.12.0, v0.14.0:pkg/reconciler/service/service.go) do;
# Channel (eventing v0.12.0 pkg/reconciler/channel), NatssChannel (eventing-contrib@v0.12.0
# natss/), KafkaChannel (knative-kafka@v0.12.0-v0.12.5) and HTTPSource (kyma@1.11.0-1.20.0
# components/event-sources) never do.
HTTP_SOURCE = Kind("sources.kyma-project.io/v1alpha1", "HTTPSource", "httpsources",
                   fields=("spec.source", "status"))
# Its spec is a pod template (env values): only the status.
KNATIVE_SERVICE = Kind("serving.knative.dev/v1", "Service", "services", observed_generation=True)
# A channel template's `spec` may carry configuration: only which kind it makes.
CHANNEL = Kind("messaging.knative.dev/v1alpha1", "Channel", "channels",
               fields=("spec.channelTemplate.apiVersion", "spec.channelTemplate.kind",
                       "spec.subscribable", "status"))
KAFKA_CHANNEL = Kind("knativekafka.kyma-project.io/v1alpha1", "KafkaChannel", "kafkachannels",
                     fields=("spec.subscribable", "status"))
NATSS_CHANNEL = Kind("messaging.knative.dev/v1alpha1", "NatssChannel", "natsschannels",
                     fields=("spec.subscribable", "status"))
SUBSCRIPTION = Kind("messaging.knative.dev/v1alpha1", "Subscription", "subscriptions",
                    fields=("spec.channel", "spec.subscriber", "spec.reply", "spec.delivery",
                            "status"), observed_generation=True)
BROKER = Kind("eventing.knative.dev/v1alpha1", "Broker", "brokers",
              fields=("spec.channelTemplateSpec.apiVersion", "spec.channelTemplateSpec.kind",
                      "spec.delivery", "status"), observed_generation=True)
TRIGGER = Kind("eventing.knative.dev/v1alpha1", "Trigger", "triggers",
               fields=("spec.broker", "spec.filter", "spec.subscriber", "status"),
               observed_generation=True)
# Never spec.parameters / parametersFrom, nor the properties in the status (the parameters
# again): the class and plan it was made from, and how provisioning went.
SERVICE_INSTANCE = Kind(
    "servicecatalog.k8s.io/v1beta1", "ServiceInstance", "serviceinstances",
    fields=("spec.serviceClassRef", "spec.clusterServiceClassRef", "spec.serviceClassName",
            "spec.clusterServiceClassName", "spec.servicePlanRef", "spec.clusterServicePlanRef",
            "spec.serviceClassExternalName", "spec.clusterServiceClassExternalName",
            "spec.servicePlanExternalName", "spec.clusterServicePlanExternalName",
            "status.provisionStatus", "status.deprovisionStatus", "status.conditions",
            "status.asyncOpInProgress", "status.orphanMitigationInProgress",
            "status.currentOperation", "status.reconciledGeneration",
            "status.observedGeneration", "status.lastConditionState"),
)
# Not shipped by Kyma (kyma-project/kyma@1.14.0:resources/knative-eventing/README.md), but an
# operator could set up another channel implementation as the default or beside NATSS ("you
# can change it to a different implementation or even use multiple Channels simultaneously":
# kyma-project/kyma docs/knative-eventing-mesh/08-02-set-up-channel.md; the earlier "Configure
# default Knative Channel" page names InMemoryChannel, with knative/eventing's
# config/channels/in-memory-channel and default-ch-webhook set to it). Its v0.12 reconciler
# writes observedGeneration (knative/eventing@v0.12.0:pkg/reconciler/inmemorychannel/
# controller/inmemorychannel.go); the tests run it for real (tests/test_knative_v012.py).
IN_MEMORY_CHANNEL = Kind("messaging.knative.dev/v1alpha1", "InMemoryChannel", "inmemorychannels",
                         fields=("spec.subscribable", "status"), observed_generation=True)
BACKING_CHANNELS = (KAFKA_CHANNEL, NATSS_CHANNEL, IN_MEMORY_CHANNEL)
# What reconciles each backing channel kind: knative-kafka's controller for a KafkaChannel;
# for a NatssChannel the NATSS controller and the shared dispatcher, whose availability is its
# DispatcherReady (eventing-contrib@v0.12.0 natss/pkg/reconciler/controller/natsschannel.go).
# By kind: a KafkaChannel's TopicFailed is never blamed on a NATSS controller that is down.
BACKING_CHANNEL_NEEDS: tuple[tuple[Kind, tuple[str, ...]], ...] = (
    (KAFKA_CHANNEL, ("system:kafka-channel-controller",)),
    (NATSS_CHANNEL, ("system:natss-channel-controller", "system:natss-channel-dispatcher")),
    # knative/eventing@v0.12.0:config/channels/in-memory-channel/500-controller.yaml,
    # 500-dispatcher.yaml, 200-dispatcher-service.yaml (the IMC's DispatcherReady and
    # EndpointsReady come from that Deployment and those Endpoints).
    (IN_MEMORY_CHANNEL, ("system:imc-controller", "system:imc-dispatcher")),
)

# With spec.skipInstallation application-operator writes INSTALLATION_SKIPPED and installs no
# release, so nothing of the application chart exists (kyma@1.11.0-1.20.0
# components/application-operator/pkg/application-controller/reconciler.go).
NOT_INSTALLED = ("application", ("status", "installationStatus", "status"), "INSTALLATION_SKIPPED")

# A Channel's backing channel: status.channel, else its own name with the kind of
# spec.channelTemplate (knative/eventing@v0.12.0:pkg/reconciler/channel/channel.go).
BACKING_CHANNEL = ByReference(("status", "channel"), ("spec", "channelTemplate"))

# Knative objects are reconciled by eventing-controller and admitted by eventing-webhook:
# when either is down, new or changed objects cannot become ready.
KNATIVE_EVENTING = ("system:eventing-controller", "system:eventing-webhook")

LINKS: tuple[Link, ...] = (
    # --- per Application (kyma-integration) ------------------------------------------------
    Link(
        "application", (APPLICATION,), Scope.APPLICATION, ByName(None, "{app}"),
        Judge.APPLICATION, "the Application; application-operator installs its Helm release",
        needs=("system:application-operator",), state=1,
    ),
    Link(
        "channel", (CHANNEL,), Scope.APPLICATION,
        ByName(INTEGRATION_NS, "{app}"),
        Judge.KNATIVE, "the application Channel the HTTP adapter posts events to",
        needs=("backing-channel", *KNATIVE_EVENTING),
        # Made by the HTTPSource, which the Application's release makes.
        created_by=("application",), unexpected_when=NOT_INSTALLED,
    ),
    Link(
        "backing-channel", BACKING_CHANNELS, Scope.APPLICATION, BACKING_CHANNEL,
        Judge.KNATIVE, "the KafkaChannel, NatssChannel or InMemoryChannel that implements the "
        "application Channel",
        needs_by_kind=BACKING_CHANNEL_NEEDS, parent="channel",
    ),
    Link(
        # Kyma 1.11-1.14: a Knative Service; 1.15 on: a Deployment (plus a core Service) of
        # the same name (kyma@1.14.0 / @1.15.0:components/event-sources/reconciler/httpsource/
        # reconcile.go makeKnService / makeDeployment). Knative Serving is gone from 1.16.
        "adapter", (KNATIVE_SERVICE, DEPLOYMENT), Scope.APPLICATION,
        ByName(INTEGRATION_NS, "{app}"),
        Judge.KNATIVE, "the HTTP adapter (Knative Service up to Kyma 1.14, Deployment from 1.15) "
        "that turns events into CloudEvents",
        judges=((KNATIVE_SERVICE, Judge.KNATIVE), (DEPLOYMENT, Judge.DEPLOYMENT)),
        created_by=("application",), unexpected_when=NOT_INSTALLED,
    ),
    Link(
        "http-source", (HTTP_SOURCE,), Scope.APPLICATION, ByName(INTEGRATION_NS, "{app}"),
        Judge.KNATIVE, "the HTTPSource that deploys the adapter and sinks it into the Channel",
        needs=("application", "channel", "adapter", "system:event-sources-controller"),
        unexpected_when=NOT_INSTALLED,
    ),
    Link(
        "event-service", (DEPLOYMENT,), Scope.APPLICATION,
        ByName(INTEGRATION_NS, "{app}-event-service"),
        Judge.DEPLOYMENT, "the event-service Deployment that accepts the application's events",
        needs=("application",),
        unexpected_when=NOT_INSTALLED,
    ),
    # --- per bound namespace ----------------------------------------------------------------
    Link(
        "mapping", (APPLICATION_MAPPING,), Scope.NAMESPACE, ByName("{namespace}", "{app}"),
        Judge.EXISTS, "the ApplicationMapping that binds the application to the namespace",
        needs=("application",), state=2,
    ),
    Link(
        "service-instance", (SERVICE_INSTANCE,), Scope.NAMESPACE, ByServiceClass("{namespace}"),
        Judge.SERVICE_INSTANCE, "the ServiceInstance that enables the application's events here",
        # A Trigger for the app's events without them being enabled here never gets any.
        needs=("mapping", "system:application-broker"), expected="trigger", many=True,
        state=3, state_when=(("status", "provisionStatus"), "Provisioned"),
    ),
    Link(
        "event-activation", (EVENT_ACTIVATION,), Scope.NAMESPACE,
        ByName("{namespace}", "{service_id}"),
        Judge.EXISTS, "the EventActivation application-broker creates for the Events service",
        needs=("service-instance",), parent="service-instance",
    ),
    Link(
        "injection-label", (NAMESPACE,), Scope.NAMESPACE, ByName(None, "{namespace}"),
        Judge.NAMESPACE_LABEL, "the namespace label that makes Knative create the Broker",
        needs=("service-instance",), expected="service-instance",
        label=("knative-eventing-injection", "enabled"),
    ),
    Link(
        "broker", (BROKER,), Scope.NAMESPACE, ByName("{namespace}", "default"),
        Judge.KNATIVE, "the namespace's default Broker",
        needs=("injection-label", "broker-ingress", "broker-filter", "trigger-channel",
               *KNATIVE_EVENTING),
        expected="service-instance",
    ),
    Link(
        "broker-ingress", (DEPLOYMENT,), Scope.NAMESPACE,
        ByName("{namespace}", "default-broker-ingress"),
        Judge.DEPLOYMENT, "the Broker's ingress Deployment", expected="broker",
    ),
    Link(
        "broker-filter", (DEPLOYMENT,), Scope.NAMESPACE,
        ByName("{namespace}", "default-broker-filter"),
        Judge.DEPLOYMENT, "the Broker's filter Deployment that delivers to Triggers",
        expected="broker",
    ),
    Link(
        # Not a messaging Channel: the Broker creates `<broker>-kne-trigger` with the kind of
        # its spec.channelTemplateSpec, owned by it, and names it in status.triggerChannel
        # (knative/eventing@v0.12.0:pkg/reconciler/broker/resources/channel.go, broker.go).
        "trigger-channel", BACKING_CHANNELS, Scope.NAMESPACE,
        ByReference(("status", "triggerChannel"), ("spec", "channelTemplateSpec"),
                    "{parent}-kne-trigger"),
        Judge.KNATIVE, "the Broker's trigger channel (a KafkaChannel, NatssChannel or "
        "InMemoryChannel)",
        needs_by_kind=BACKING_CHANNEL_NEEDS, parent="broker",
    ),
    Link(
        "brokersub", (SUBSCRIPTION,), Scope.NAMESPACE,
        ByLabels(
            INTEGRATION_NS,
            (("broker-namespace", "{namespace}"), ("application-name", "{app}")),
            namespace_label="broker-namespace",
        ),
        Judge.KNATIVE, "the brokersub- Subscription from the application Channel to the Broker",
        needs=("service-instance", "channel", "broker", *KNATIVE_EVENTING),
        expected="service-instance", many=True,
    ),
    Link(
        "trigger", (TRIGGER,), Scope.NAMESPACE,
        ByField("{namespace}", ("spec", "filter", "attributes", "source"), "{app}"),
        Judge.KNATIVE, "a Trigger that subscribes to the application's events",
        needs=("broker", "trigger-subscription", *KNATIVE_EVENTING),
        expected=Expect.OPTIONAL, many=True, state=4,
    ),
    Link(
        "trigger-subscription", (SUBSCRIPTION,), Scope.NAMESPACE, ByOwner(),
        Judge.KNATIVE, "the Subscription a Trigger owns on the trigger Channel",
        # The trigger Channel belongs to the Broker: without a Broker there is none to find.
        needs=("broker", "trigger-channel", *KNATIVE_EVENTING),
        expected=Expect.OPTIONAL, many=True, parent="trigger",
    ),
)

COMPONENTS: tuple[Component, ...] = (
    Component("application-operator", INTEGRATION_NS, "application-operator", "controller",
              workload=STATEFULSET),
    Component("application-broker", INTEGRATION_NS, "application-broker", "controller"),
    Component(
        "event-sources-controller", "kyma-system", "event-sources-controller-manager", "controller"
    ),
    Component("eventing-controller", "knative-eventing", "eventing-controller", "controller"),
    Component(
        "eventing-webhook", "knative-eventing", "eventing-webhook", "webhook",
        service="eventing-webhook",
    ),
    Component(
        "kafka-channel-controller", "knative-eventing", "knative-eventing-kafka-channel-controller",
        "controller", required_if_any=(KAFKA_CHANNEL,),
    ),
    Component(
        "natss-channel-controller", "knative-eventing", "natss-ch-controller", "controller",
        required_if_any=(NATSS_CHANNEL,),
    ),
    Component(
        "natss-channel-dispatcher", "knative-eventing", "natss-ch-dispatcher", "dispatcher",
        required_if_any=(NATSS_CHANNEL,),
    ),
    Component("imc-controller", "knative-eventing", "imc-controller", "controller",
              required_if_any=(IN_MEMORY_CHANNEL,)),
    Component("imc-dispatcher", "knative-eventing", "imc-dispatcher", "dispatcher",
              service="imc-dispatcher", required_if_any=(IN_MEMORY_CHANNEL,)),
)

# --- the data plane (probing/health.py: hop localisation) --------------------------------------
# Heartbeats enter at the event-service (ingress), the application Channel's address (channel)
# and the namespace's broker ingress (broker). The brokersub- Subscription's name is generated
# (application-broker: brokersub-<random>); it is found by its two labels.
HTTP_SOURCE_OF_APP = ObjectAt(HTTP_SOURCE, INTEGRATION_NS, "{app}")
APPLICATION_CHANNEL = ObjectAt(CHANNEL, INTEGRATION_NS, "{app}")
DEFAULT_BROKER = ObjectAt(BROKER, "{namespace}", "default")
BROKERSUB = ByPairLabels(SUBSCRIPTION, INTEGRATION_NS, "application-name", "broker-namespace",
                         "brokersub-")

DATA_PLANE = DataPlane(
    hops=(
        DataHop("ingress", HTTP_SOURCE_OF_APP,
                "the path event-service → HTTP adapter → application Channel",
                HTTP_SOURCE_OF_APP, "the application's event-service"),
        DataHop("channel", BROKERSUB,
                "the path application Channel → Broker (the brokersub- Subscription)",
                APPLICATION_CHANNEL, "the application Channel's address"),
        DataHop("broker", DEFAULT_BROKER,
                "the namespace's Broker (ingress → filter → Trigger → checker)",
                DEFAULT_BROKER, "the namespace's broker ingress"),
    ),
    broker=DEFAULT_BROKER,
    channel=APPLICATION_CHANNEL,
    trigger=TRIGGER,
)

PROFILE: Profile = Profile(
    name="kyma-1",
    description="Kyma 1.11-1.20 (Knative Eventing v0.12, application-connector, event-sources)",
    application=APPLICATION,
    kinds=(
        APPLICATION, APPLICATION_MAPPING, EVENT_ACTIVATION, HTTP_SOURCE, KNATIVE_SERVICE, CHANNEL,
        KAFKA_CHANNEL, NATSS_CHANNEL, IN_MEMORY_CHANNEL, SUBSCRIPTION, BROKER, TRIGGER,
        SERVICE_INSTANCE,
        *CORE_KINDS,
    ),
    links=LINKS,
    components=COMPONENTS,
    namespace_sources=(
        NamespaceSource("mapping"),
        NamespaceSource("service-instance"),
        NamespaceSource("brokersub"),
        NamespaceSource("trigger"),
    ),
    system_namespaces=("knative-eventing", INTEGRATION_NS, "kyma-system"),
    webhook_kinds=(VALIDATING_WEBHOOK, MUTATING_WEBHOOK),
    # Either channel implementation will do: a cluster without one of them is fine; Knative
    # Serving is not installed from Kyma 1.16 (the adapter is a Deployment there).
    optional_kinds=(*BACKING_CHANNELS, KNATIVE_SERVICE),
    data_plane=DATA_PLANE,
    # Kyma's own application-connector and event-sources kinds: a plain Knative cluster has
    # none of them.
    markers=(APPLICATION, APPLICATION_MAPPING, EVENT_ACTIVATION, HTTP_SOURCE),
)
