"""Knative Eventing v1 (knative.dev/eventing v0.48.0 = Knative v1.21): flows, not Applications.

Knative has no Application: what a user means by "my events" is a Broker with its Triggers,
a Channel with its Subscriptions, or a source with its sink. Each is a `Flow`, reported per
namespace. Link ids are `<flow>/<link>`: a cluster may run this profile beside another
(`registry.combine`), and ids must not clash. The shapes, condition sets and names below
are read from the controllers at that tag; docs/reference/knative-v1-shapes.md cites file
and function for each.
"""

from __future__ import annotations

from eventmesh_health.topology import (
    ByField,
    ByName,
    ByOwner,
    ByRef,
    ByReference,
    Component,
    DataPlane,
    Expect,
    Flow,
    FlowProbe,
    HeartbeatSubscriber,
    Judge,
    Kind,
    Link,
    Producers,
    Profile,
    Scope,
    TypeFilter,
)
from eventmesh_health.topology.core import (
    CORE_KINDS,
    MUTATING_WEBHOOK,
    SERVICE,
    STATEFULSET,
    VALIDATING_WEBHOOK,
)

SYSTEM_NS = "knative-eventing"

# --- kinds --------------------------------------------------------------------------------
# Every v1 reconciler is a genreconciler: PostProcessReconcile writes status.observedGeneration
# on every pass, success or not (knative.dev/pkg reconciler/reconcile_common.go); SinkBinding's
# (eventing-webhook, psbinding) only on success. Which conditions gate Ready needs no table
# here: knative.dev/pkg apis/condition_set.go writes a condition outside the living set with
# `severity: Info`, which the rules skip (an IMC's DispatcherReady in v1.21; the MT Broker's
# DeadLetterSinkResolved). True conditions with a reason (DeadLetterSinkNotConfigured,
# "authentication-oidc feature disabled", OIDCDisabled, DefaultAuthorizationMode) are healthy:
# only Ready decides. Sources: docs/reference/knative-v1-shapes.md §0-1.
BROKER_CLASS = "eventing.knative.dev/broker.class"  # pkg/apis/eventing/register.go
MT_BROKER = "MTChannelBasedBroker"
# knative-extensions/eventing-kafka-broker@knative-v1.21.0 control-plane/pkg/kafka/
# broker_class.go: judged by their own conditions; their data plane is kafka-broker-*.
KAFKA_BROKERS = ("Kafka", "KafkaNamespaced")
BROKER = Kind(
    "eventing.knative.dev/v1", "Broker", "brokers",
    fields=("spec.config", "spec.delivery", "status"),
    annotations=(BROKER_CLASS,), classes=(BROKER_CLASS, (MT_BROKER, *KAFKA_BROKERS)),
    observed_generation=True, versioned=True,
)
TRIGGER = Kind(
    "eventing.knative.dev/v1", "Trigger", "triggers",
    fields=("spec.broker", "spec.filter", "spec.filters", "spec.subscriber", "spec.delivery",
            "status"),
    observed_generation=True, versioned=True,
)
CHANNEL = Kind(
    "messaging.knative.dev/v1", "Channel", "channels",
    fields=("spec.channelTemplate.apiVersion", "spec.channelTemplate.kind", "spec.subscribers",
            "spec.delivery", "status"),
    observed_generation=True, versioned=True,
)
# DispatcherReady is written (severity Info) but is not in the v1.21 IMC living set: a dead
# dispatcher leaves the IMC Ready; only its Endpoints gate it (pkg/apis/messaging/v1/
# in_memory_channel_lifecycle.go imcCondSet). The dispatcher is a system component here.
IN_MEMORY_CHANNEL = Kind(
    "messaging.knative.dev/v1", "InMemoryChannel", "inmemorychannels",
    fields=("spec.subscribers", "spec.delivery", "status"),
    observed_generation=True, versioned=True,
)
KAFKA_CHANNEL = Kind(
    "messaging.knative.dev/v1beta1", "KafkaChannel", "kafkachannels",
    fields=("spec.subscribers", "spec.delivery", "status"), observed_generation=True,
)
SUBSCRIPTION = Kind(
    "messaging.knative.dev/v1", "Subscription", "subscriptions",
    fields=("spec.channel", "spec.subscriber", "spec.reply", "spec.delivery", "status"),
    observed_generation=True, versioned=True,
)
PING_SOURCE = Kind(
    "sources.knative.dev/v1", "PingSource", "pingsources",
    fields=("spec.schedule", "spec.sink", "status"), observed_generation=True,
)
API_SERVER_SOURCE = Kind(
    "sources.knative.dev/v1", "ApiServerSource", "apiserversources",
    fields=("spec.mode", "spec.resources", "spec.sink", "status"), observed_generation=True,
)
# Its spec is a pod template (env values): only the sink and the status.
CONTAINER_SOURCE = Kind(
    "sources.knative.dev/v1", "ContainerSource", "containersources",
    fields=("spec.sink", "status"), observed_generation=True,
)
SINK_BINDING = Kind(
    "sources.knative.dev/v1", "SinkBinding", "sinkbindings",
    fields=("spec.subject.apiVersion", "spec.subject.kind", "spec.subject.name", "spec.sink",
            "status"), observed_generation=True,
)
# The event registry (pkg/apis/eventing/v1beta3/eventtype_types.go): what reaches a Broker.
# Made by the broker ingress when `eventtype-auto-create` is enabled (pkg/eventtype/
# eventtypes.go AutoCreateEventType: attributes type/source, reference = the Broker) and by
# eventing-controller for PingSources and ApiServerSources (pkg/reconciler/source/duck).
EVENT_TYPE = Kind(
    "eventing.knative.dev/v1beta3", "EventType", "eventtypes",
    fields=("spec.reference", "spec.attributes", "status"), observed_generation=True,
)
# A subscriber or sink may be a Knative Service (Serving installed or not).
KNATIVE_SERVICE = Kind("serving.knative.dev/v1", "Service", "services", observed_generation=True)

SOURCES = (PING_SOURCE, API_SERVER_SOURCE, CONTAINER_SOURCE, SINK_BINDING)
BACKING_CHANNELS = (IN_MEMORY_CHANNEL, KAFKA_CHANNEL)
# What a subscriber, reply, sink or dead-letter sink may refer to, and how each is judged.
ADDRESSABLES = (SERVICE, KNATIVE_SERVICE, BROKER, CHANNEL, IN_MEMORY_CHANNEL, KAFKA_CHANNEL)
ADDRESSABLE_JUDGES = ((SERVICE, Judge.SERVICE),)

CLASS_PATH = ("metadata", "annotations", BROKER_CLASS)

# Which system components serve what (config/ at v0.48.0; knative-extensions/
# eventing-kafka-broker@knative-v1.21.0 for the Kafka ones): knative-v1-shapes.md §3.
EVENTING = ("system:eventing-controller", "system:eventing-webhook")
MT_DATA_PLANE = ("system:mt-broker-controller", "system:mt-broker-ingress",
                 "system:mt-broker-filter")
KAFKA_BROKER_PLANE = ("system:kafka-controller", "system:kafka-broker-receiver",
                      "system:kafka-broker-dispatcher")
BACKING_CHANNEL_NEEDS = (
    (IN_MEMORY_CHANNEL, ("system:imc-controller", "system:imc-dispatcher")),
    (KAFKA_CHANNEL, ("system:kafka-controller", "system:kafka-channel-receiver",
                     "system:kafka-channel-dispatcher")),
)


def _deliveries(parent: str, what: str) -> tuple[Link, ...]:
    """The objects a parent delivers to, by reference: its subscriber and its dead-letter
    sink. A URI has no object to judge; a missing ref target is the root
    cause of what the parent cannot deliver, even while the parent stays Ready (a v1.21
    Trigger does not re-resolve its subscriber until its Broker changes)."""
    return (
        Link(f"{parent}-subscriber", ADDRESSABLES, Scope.FLOW,
             ByRef(("spec", "subscriber", "ref")), Judge.KNATIVE,
             f"the {what}'s subscriber", judges=ADDRESSABLE_JUDGES, parent=parent),
        Link(f"{parent}-dead-letter-sink", ADDRESSABLES, Scope.FLOW,
             ByRef(("spec", "delivery", "deadLetterSink", "ref")), Judge.KNATIVE,
             f"the {what}'s dead-letter sink", judges=ADDRESSABLE_JUDGES, parent=parent),
    )


# What is known to reach a Broker: its EventTypes (spec.reference), and the sources sinking
# into it with the types they declare (status.ceAttributes: PingSource
# dev.knative.sources.ping, ApiServerSource dev.knative.apiserver.*; pkg/apis/sources/...).
SENT_TO_BROKER = TypeFilter(
    ("spec", "filter", "attributes", "type"),
    (Producers(EVENT_TYPE, ("spec", "reference"), ("spec", "attributes")),
     Producers(PING_SOURCE, ("spec", "sink", "ref"), ("status", "ceAttributes")),
     Producers(API_SERVER_SOURCE, ("spec", "sink", "ref"), ("status", "ceAttributes"))),
)

BROKER_FLOW = Flow(
    "broker", (BROKER,), (
        Link("broker/broker", (BROKER,), Scope.FLOW, ByName("{namespace}", "{flow}"), Judge.KNATIVE,
             "the Broker", needs=("broker/trigger-channel", *EVENTING),
             needs_when=((CLASS_PATH, MT_BROKER, MT_DATA_PLANE),
                         *((CLASS_PATH, kafka, KAFKA_BROKER_PLANE) for kafka in KAFKA_BROKERS))),
        Link(
            # `<broker>-kne-trigger`, owned by the Broker, of the kind config-br-default-channel
            # names (pkg/reconciler/broker/resources/channel.go: BrokerChannelName).
            "broker/trigger-channel", BACKING_CHANNELS, Scope.FLOW,
            ByName("{namespace}", "{flow}-kne-trigger"), Judge.KNATIVE,
            "the Broker's trigger channel", needs_by_kind=BACKING_CHANNEL_NEEDS,
            only_when=("broker/broker", CLASS_PATH, MT_BROKER), created_by=("broker/broker",),
        ),
        Link("broker/trigger", (TRIGGER,), Scope.FLOW, ByField("{namespace}", ("spec", "broker"),
                                                      "{flow}"),
             Judge.KNATIVE, "a Trigger on the Broker",
             needs=("broker/broker", "broker/trigger-subscription", "broker/trigger-subscriber",
                    *EVENTING),
             expected=Expect.OPTIONAL, many=True, type_filter=SENT_TO_BROKER),
        Link("broker/trigger-subscription", (SUBSCRIPTION,), Scope.FLOW, ByOwner(), Judge.KNATIVE,
             "the Subscription a Trigger owns on the trigger channel",
             needs=("broker/broker", "broker/trigger-channel", *EVENTING),
             parent="broker/trigger", only_when=("broker/broker", CLASS_PATH, MT_BROKER)),
        *_deliveries("broker/trigger", "Trigger"),
    ),
    "a Broker, its Triggers and their subscribers",
    # A Trigger on a Broker that does not exist gets no status at all when it came first
    # (pkg/reconciler/broker/trigger/controller.go filterTriggers), BrokerDoesNotExist when
    # the Broker went: either way the missing Broker is what to report.
    referrers=((TRIGGER, ("spec", "broker")),),
)

CHANNEL_FLOW = Flow(
    "channel", (CHANNEL, IN_MEMORY_CHANNEL, KAFKA_CHANNEL), (
        Link("channel/channel", (CHANNEL, IN_MEMORY_CHANNEL, KAFKA_CHANNEL), Scope.FLOW,
             ByName("{namespace}", "{flow}"), Judge.KNATIVE, "the Channel",
             needs=("channel/backing-channel", *EVENTING), needs_by_kind=BACKING_CHANNEL_NEEDS),
        Link(
            # status.channel, else the Channel's own name with its template's kind
            # (pkg/reconciler/channel/channel.go).
            "channel/backing-channel", BACKING_CHANNELS, Scope.FLOW,
            ByReference(("status", "channel"), ("spec", "channelTemplate")), Judge.KNATIVE,
            "the channel implementation behind the Channel",
            needs_by_kind=BACKING_CHANNEL_NEEDS, parent="channel/channel",
            only_when=("channel/channel", ("kind",), "Channel"),
        ),
        Link("channel/subscription", (SUBSCRIPTION,), Scope.FLOW,
             ByField("{namespace}", ("spec", "channel", "name"), "{flow}"), Judge.KNATIVE,
             "a Subscription to the Channel",
             needs=("channel/channel", "channel/subscription-subscriber", *EVENTING),
             expected=Expect.OPTIONAL, many=True),
        *_deliveries("channel/subscription", "Subscription"),
        Link("channel/subscription-reply", ADDRESSABLES, Scope.FLOW,
             ByRef(("spec", "reply", "ref")), Judge.KNATIVE, "the Subscription's reply",
             judges=ADDRESSABLE_JUDGES, parent="channel/subscription"),
    ),
    "a Channel, its Subscriptions and their subscribers",
    # The channel a Channel or a Broker made is part of that flow.
    not_if_owned_by=(CHANNEL, BROKER),
    referrers=((SUBSCRIPTION, ("spec", "channel", "name")),),
)

SOURCE_FLOW = Flow(
    "source", SOURCES, (
        Link("source/source", SOURCES, Scope.FLOW, ByName("{namespace}", "{flow}"), Judge.KNATIVE,
             "the source", needs=("source/sink", *EVENTING),
             needs_by_kind=((PING_SOURCE, ("system:pingsource-mt-adapter",)),)),
        Link("source/sink", ADDRESSABLES, Scope.FLOW, ByRef(("spec", "sink", "ref")), Judge.KNATIVE,
             "the source's sink", judges=ADDRESSABLE_JUDGES, parent="source/source"),
    ),
    "a source and its sink",
)

# knative/eventing@v0.48.0 config/ (Deployments, and the Services in front of them) and
# eventing-kafka-broker@knative-v1.21.0 config/ (the dispatchers are StatefulSets).
COMPONENTS: tuple[Component, ...] = (
    Component("eventing-controller", SYSTEM_NS, "eventing-controller", "controller"),
    Component("eventing-webhook", SYSTEM_NS, "eventing-webhook", "webhook",
              service="eventing-webhook"),
    # Also serves the InMemoryChannel admission webhook (Service inmemorychannel-webhook).
    Component("imc-controller", SYSTEM_NS, "imc-controller", "controller",
              required_if_any=(IN_MEMORY_CHANNEL,)),
    Component("imc-dispatcher", SYSTEM_NS, "imc-dispatcher", "dispatcher",
              service="imc-dispatcher", required_if_any=(IN_MEMORY_CHANNEL,)),
    Component("mt-broker-controller", SYSTEM_NS, "mt-broker-controller", "controller",
              required_if_any=(BROKER,)),
    Component("mt-broker-ingress", SYSTEM_NS, "mt-broker-ingress", "broker ingress",
              service="broker-ingress", required_if_any=(BROKER,)),
    Component("mt-broker-filter", SYSTEM_NS, "mt-broker-filter", "broker filter",
              service="broker-filter", required_if_any=(BROKER,)),
    # Shipped with replicas 0; the PingSource reconciler scales it to 1 once one exists.
    Component("pingsource-mt-adapter", SYSTEM_NS, "pingsource-mt-adapter", "source adapter",
              required_if_any=(PING_SOURCE,)),
    Component("kafka-controller", SYSTEM_NS, "kafka-controller", "controller",
              required_if_any=(KAFKA_CHANNEL,)),
    Component("kafka-channel-receiver", SYSTEM_NS, "kafka-channel-receiver", "channel ingress",
              service="kafka-channel-ingress", required_if_any=(KAFKA_CHANNEL,)),
    Component("kafka-channel-dispatcher", SYSTEM_NS, "kafka-channel-dispatcher",
              "dispatcher", required_if_any=(KAFKA_CHANNEL,), workload=STATEFULSET),
    # Only a Kafka Broker needs these (Link.needs_when): present or not, never required.
    Component("kafka-broker-receiver", SYSTEM_NS, "kafka-broker-receiver", "broker ingress",
              service="kafka-broker-ingress", required=False),
    Component("kafka-broker-dispatcher", SYSTEM_NS, "kafka-broker-dispatcher", "dispatcher",
              workload=STATEFULSET, required=False),
)

# What `serve --probe` does with the flows: a heartbeat Trigger on each Ready Broker of a
# class with a data plane we know (filtering on the heartbeat attributes, so it sees only
# heartbeats), heartbeats POSTed to the Broker's ingress (status.address.url); a heartbeat
# Subscription on each Ready Channel (a Subscription cannot filter: it receives every event
# of the Channel), heartbeats POSTed to the Channel's address. A heartbeat crosses the whole
# flow (ingress -> trigger channel -> dispatcher -> filter -> receiver; channel -> dispatcher
# -> receiver), so a finding names the root.
DATA_PLANE = DataPlane(
    flows=(
        FlowProbe(
            "broker", (BROKER,), "broker",
            HeartbeatSubscriber(TRIGGER, ("spec", "broker"),
                                filter=("spec", "filter", "attributes")),
            "the Broker {namespace}/{name} (its ingress → trigger channel → filter → the "
            "heartbeat Trigger)",
            "the ingress of Broker {namespace}/{name}",
            classes=(BROKER_CLASS, (MT_BROKER, *KAFKA_BROKERS)),
            # pkg/reconciler/broker/broker.go propagateTriggerChannelReadiness writes it;
            # pkg/broker/ingress/ingress_handler.go getChannelAddress posts there.
            inner_address=("status", "annotations", "knative.dev/channelAddress"),
            inner_entry_text="the trigger channel of Broker {namespace}/{name} (its channel "
            "dispatcher)",
            # A failing subscriber is dead-lettered by the filter: an event the trigger
            # channel took that arrives nowhere stopped at the filter.
            inner_segment_text="the broker filter of Broker {namespace}/{name} (trigger "
            "channel → broker filter → Trigger)",
        ),
        FlowProbe(
            "channel", (CHANNEL, IN_MEMORY_CHANNEL, KAFKA_CHANNEL), "channel",
            HeartbeatSubscriber(SUBSCRIPTION, ("spec", "channel"), root_as_ref=True),
            "the {kind} {namespace}/{name} (its address → dispatcher → the heartbeat "
            "Subscription)",
            "the address of {kind} {namespace}/{name}",
        ),
    ),
)

PROFILE: Profile = Profile(
    name="knative-v1",
    description="Knative Eventing v1 (v1.21: Brokers, Triggers, Channels, Subscriptions, "
    "sources), reported per flow",
    application=None,
    kinds=(BROKER, TRIGGER, CHANNEL, IN_MEMORY_CHANNEL, KAFKA_CHANNEL, SUBSCRIPTION, *SOURCES,
           EVENT_TYPE, KNATIVE_SERVICE, *CORE_KINDS),
    links=(),
    components=COMPONENTS,
    namespace_sources=(),
    system_namespaces=(SYSTEM_NS,),
    webhook_kinds=(VALIDATING_WEBHOOK, MUTATING_WEBHOOK),
    optional_kinds=(KAFKA_CHANNEL, KNATIVE_SERVICE, EVENT_TYPE, *SOURCES),
    flows=(BROKER_FLOW, CHANNEL_FLOW, SOURCE_FLOW),
    data_plane=DATA_PLANE,
    # The v1 API versions: Knative v0.12 (Kyma 1.x) has the same kinds at v1alpha1/v1beta1.
    markers=(BROKER, TRIGGER, CHANNEL, IN_MEMORY_CHANNEL, SUBSCRIPTION),
)
