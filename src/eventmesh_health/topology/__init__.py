"""Topology profiles: which objects make up an event flow, how they are found, how judged.

A profile is plain data. The analysis walks it; adding a link or changing how
one is found is an edit here, not a new code path.

Vocabulary:
- a *link* is one role in an Application's chain ("the application Channel",
  "the Broker of the namespace"), found by a *finder* and judged by a *judge*;
- a link *needs* other links (or system components): when a needed link is
  failing, this link's failure is a symptom of it, never a root cause;
- a *component* is a system Deployment (controller, webhook, dispatcher);
- the *data plane* (`DataPlane`) names the hops heartbeats are injected at and the objects
  a data-plane finding blames, so probing needs no kind of its own;
- *markers* are the kinds that tell a cluster or a dump runs this mesh (`--profile auto`);
- a *flow* is the unit of health of a mesh without Applications (Knative v1): one root
  object (a Broker, a Channel, a source) and the links found from it, in its namespace.

Profiles are registered by name in `topology.registry`; `topology.rbac` generates the
ClusterRoles in deploy/rbac/ from them. Only `topology/` names a profile's kinds: the
analysis, probing, serve and the CLI get a `Profile` passed in.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum


@dataclass(frozen=True, slots=True)
class Kind:
    """A Kubernetes resource type the profile reads."""

    api_version: str
    kind: str
    plural: str
    namespaced: bool = True
    # The fields the analysis reads beyond the common metadata: all a dump keeps of an
    # object (see sources/slim.py; `spec.services[].id` walks a list).
    fields: tuple[str, ...] = field(default=("status",), compare=False)
    # Whether this kind's controller writes `status.observedGeneration`. Only then is a
    # generation ahead of it "not yet observed" (as kstatus: no field, no comparison); a
    # controller that never writes it would leave every changed object Progressing forever.
    observed_generation: bool = field(default=False, compare=False)
    # (annotation, the values this profile can judge): a kind whose implementation is
    # chosen per object (a Broker's class). Another value is judged Unknown, the class named.
    classes: tuple[str, tuple[str, ...]] | None = field(default=None, compare=False)
    # Annotations the analysis reads (a Broker's class); a dump keeps only these and ours.
    annotations: tuple[str, ...] = field(default=(), compare=False)
    # Markers only: match this apiVersion exactly, not any version of the kind. Knative
    # v0.12 (Kyma 1.x) and v1 share kinds and resources; only the version tells them apart.
    versioned: bool = field(default=False, compare=False)
    # Version-independent identity used to index objects (`Deployment.apps`).
    key: str = field(init=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "key", kind_key(self.api_version, self.kind))

    @property
    def group(self) -> str:
        return self.api_version.rpartition("/")[0]

    @property
    def version(self) -> str:
        return self.api_version.rpartition("/")[2]

    @property
    def resource(self) -> str:
        """`plural.group` as kubectl and RBAC name it (`deployments.apps`, `pods`)."""
        return f"{self.plural}.{self.group}" if self.group else self.plural

    @property
    def versioned_key(self) -> str:
        """`Broker.eventing.knative.dev/v1`: the kind at this version (marker matching)."""
        return f"{self.key}/{self.version}"

    @property
    def versioned_resource(self) -> str:
        """`brokers.eventing.knative.dev/v1`: the resource at this version."""
        return f"{self.resource}/{self.version}"


_KIND_KEYS: dict[tuple[str, str], str] = {}


def kind_key(api_version: str, kind: str) -> str:
    """`Kind.group` for an object's apiVersion and kind (memoised: called per object)."""
    key = _KIND_KEYS.get((api_version, kind))
    if key is None:
        group = api_version.rpartition("/")[0]
        key = f"{kind}.{group}" if group else kind
        if len(_KIND_KEYS) < 10_000:  # bounded: a hostile dump cannot grow it forever
            _KIND_KEYS[(api_version, kind)] = key
    return key


class Scope(StrEnum):
    APPLICATION = "application"
    NAMESPACE = "namespace"
    FLOW = "flow"  # a link of a `Flow`: found from the flow's root, in its namespace


class Judge(StrEnum):
    """How an object's health is decided (see `analysis.rules`)."""

    KNATIVE = "knative"  # Ready condition + observedGeneration
    DEPLOYMENT = "deployment"  # availability, plus the state of its Pods
    STATEFULSET = "statefulset"  # ready replicas, plus the state of its Pods
    APPLICATION = "application"  # status.installationStatus.status == DEPLOYED
    SERVICE_INSTANCE = "service-instance"  # status.provisionStatus == Provisioned
    EXISTS = "exists"  # no status to judge: existing (and not stuck deleting) is healthy
    SERVICE = "service"  # a core Service: it has a ready endpoint
    NAMESPACE_LABEL = "namespace-label"  # the Namespace carries a given label


# --- finders: how a link's objects are found. Strings may hold {app}, {namespace}, {service_id}.


@dataclass(frozen=True, slots=True)
class ByName:
    namespace: str | None
    name: str


@dataclass(frozen=True, slots=True)
class ByLabels:
    namespace: str
    labels: tuple[tuple[str, str], ...]
    # The label holding the namespace the object serves, when it lives elsewhere.
    namespace_label: str | None = None


@dataclass(frozen=True, slots=True)
class ByField:
    """Objects whose field at `path` equals `value` (e.g. a Trigger's filter source)."""

    namespace: str
    path: tuple[str, ...]
    value: str


@dataclass(frozen=True, slots=True)
class ByOwner:
    """Objects in the parent's namespace listing the parent among their ownerReferences."""


@dataclass(frozen=True, slots=True)
class ByReference:
    """The object the parent names in the reference its controller writes at `ref`
    (`{apiVersion, kind, name}`); until it does, the object named `name` ({parent}: the
    parent's name) with the kind of the parent's channel template at `template`. Always in
    the parent's namespace. A Channel's backing channel (`status.channel`), a Broker's
    trigger channel (`status.triggerChannel`)."""

    ref: tuple[str, ...]
    template: tuple[str, ...]
    name: str = "{parent}"


@dataclass(frozen=True, slots=True)
class ByServiceClass:
    """ServiceInstances whose service class (any of `paths`) is one of the app's Events
    service ids; the matching id becomes {service_id} for the links below it."""

    namespace: str
    paths: tuple[tuple[str, ...], ...] = (
        ("spec", "serviceClassRef", "name"),
        ("spec", "clusterServiceClassRef", "name"),
        ("spec", "serviceClassName"),
        ("spec", "clusterServiceClassName"),
    )


@dataclass(frozen=True, slots=True)
class ByRef:
    """The object the parent names at `path` as a Knative `KReference`/`Destination.ref`
    (`{apiVersion, kind, name, namespace?}`; the parent's namespace when none): a Trigger's
    subscriber, a source's sink. Nothing when the parent gives a URI instead of a ref."""

    path: tuple[str, ...]


Finder = ByName | ByLabels | ByField | ByOwner | ByReference | ByServiceClass | ByRef


@dataclass(frozen=True, slots=True)
class Producers:
    """Objects that say which event types they send where: `kind` objects whose
    `KReference` at `ref` names the target, with the types in the list at `types` — items
    `{name: type, value: T}` (an EventType's attributes) or `{type: T}` (a source's
    status.ceAttributes)."""

    kind: Kind
    ref: tuple[str, ...]
    types: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class TypeFilter:
    """A link whose objects select events by type at `path` (a Trigger's exact filter on
    `type`). When the types known to reach the flow's root (from `producers`) are known
    and none is that type, the object receives nothing while Ready."""

    path: tuple[str, ...]
    producers: tuple[Producers, ...]


class Expect(StrEnum):
    ALWAYS = "always"  # missing is a finding
    OPTIONAL = "optional"  # zero or more; none is fine (e.g. Triggers)


@dataclass(frozen=True, slots=True)
class Link:
    id: str
    kinds: tuple[Kind, ...]
    scope: Scope
    find: Finder
    judge: Judge
    description: str
    # Links or components ("system:<id>") this link cannot work without.
    needs: tuple[str, ...] = ()
    # Further needs that depend on the kind of the object found (or expected): a KafkaChannel
    # needs the Kafka channel controller, a NatssChannel the NATSS one.
    needs_by_kind: tuple[tuple[Kind, tuple[str, ...]], ...] = ()
    # When the object is missing: the links whose failure explains why it was never made
    # (its creator's creator, when the creator itself needs this link: no cycles).
    created_by: tuple[str, ...] = ()
    # ALWAYS, OPTIONAL, or the id of a link that, once found, makes this one expected.
    expected: Expect | str = Expect.ALWAYS
    many: bool = False
    # Found once per object of this link; {service_id} etc. come from it.
    parent: str | None = None
    # The seed's state level reached when this link exists and is healthy enough.
    state: int | None = None
    # ...and only once this field has this value (e.g. provisionStatus: Provisioned).
    state_when: tuple[tuple[str, ...], str] | None = None
    label: tuple[str, str] | None = None  # for Judge.NAMESPACE_LABEL
    # A judge per kind where the link's kinds are judged differently (the HTTP adapter: a
    # Knative Service in Kyma 1.11-1.14, a Deployment from 1.15); others get `judge`.
    judges: tuple[tuple[Kind, Judge], ...] = ()
    # Not expected (missing is fine) when an object of link `[0]` has `[2]` at path `[1]`:
    # e.g. no event-service when the Application's installation was skipped by design.
    unexpected_when: tuple[str, tuple[str, ...], str] | None = None
    # Expected only when an object of link `[0]` has `[2]` at path `[1]`: a Broker's trigger
    # channel exists only for the channel-based Broker class.
    only_when: tuple[str, tuple[str, ...], str] | None = None
    # Further needs when the object found has `[1]` at path `[0]` (a Broker's class
    # annotation says which data plane serves it).
    needs_when: tuple[tuple[tuple[str, ...], str, tuple[str, ...]], ...] = ()
    # Judge what the object filters against what is known to be sent (Triggers).
    type_filter: TypeFilter | None = None


def judge_for(link: Link, kind_key: str) -> Judge:
    """How `link` judges an object of `kind_key`."""
    for kind, judge in link.judges:
        if kind.key == kind_key:
            return judge
    return link.judge


@dataclass(frozen=True, slots=True)
class Component:
    """A system workload the mesh depends on, judged by availability and its Pods."""

    id: str
    namespace: str
    deployment: str  # the workload's name (a Deployment unless `workload` says otherwise)
    role: str
    # A Service that must have ready endpoints (admission webhooks).
    service: str | None = None
    # Only required when objects of one of these kinds exist (e.g. a channel's controller).
    required_if_any: tuple[Kind, ...] = ()
    # The workload kind when it is not a Deployment (a StatefulSet).
    workload: Kind | None = None
    # False: judged when present, never missed (what only some objects' class needs).
    required: bool = True


@dataclass(frozen=True, slots=True)
class NamespaceSource:
    """A link whose objects, wherever they are, bind the app to a namespace."""

    link: str


# --- the data plane: the hops heartbeats cross, and the objects findings about them name.


@dataclass(frozen=True, slots=True)
class ObjectAt:
    """One object by kind, namespace and name; strings may hold {app} and {namespace}."""

    kind: Kind
    namespace: str
    name: str

    def place(self, app: str, namespace: str) -> tuple[str, str]:
        """(namespace, name) of the object for this application and namespace."""
        return (self.namespace.format(app=app, namespace=namespace),
                self.name.format(app=app, namespace=namespace))


@dataclass(frozen=True, slots=True)
class ByPairLabels:
    """Objects with generated names (a `brokersub-` Subscription), one per (application,
    namespace): in `namespace`, named `prefix...`, labelled with the application and the
    namespace they serve."""

    kind: Kind
    namespace: str
    application_label: str
    namespace_label: str
    prefix: str


@dataclass(frozen=True, slots=True)
class DataHop:
    """One probed hop, upstream first. `id` is a `probing.heartbeat.Hop` value (`ingress`,
    `channel`, `broker`): the place heartbeats are injected. A probe injected at a hop
    crosses its `segment` (named by findings that blame the path) and every hop below it;
    a failing injection names the `entry`."""

    id: str
    segment: ObjectAt | ByPairLabels
    segment_text: str
    entry: ObjectAt
    entry_text: str


@dataclass(frozen=True, slots=True)
class HeartbeatSubscriber:
    """The object probing creates on a flow's root to receive its heartbeats (a Trigger on a
    Broker, a Subscription on a Channel): its kind, where its spec names the root (the
    root's name, or with `root_as_ref` a `{apiVersion, kind, name}` reference), and where
    exact-match attribute filters go (None: it cannot filter and receives every event of
    the root). Its `spec.subscriber.uri` is the receiver, `spec.delivery.deadLetterSink.uri`
    the receiver's dead-letter URL."""

    kind: Kind
    root: tuple[str, ...]
    root_as_ref: bool = False
    filter: tuple[str, ...] | None = None


@dataclass(frozen=True, slots=True)
class FlowProbe:
    """Flows probed by heartbeats (a mesh without Applications): the flows `flow` (a
    `Flow.id`) rooted at one of `roots` whose root is Ready (and, with `classes`, has one
    of the values at the annotation), each with a heartbeat object of its own
    (`subscriber`). Heartbeats are injected at hop `hop` (a `probing.heartbeat.Hop` value)
    into the root's `status.address.url` and cross the whole flow to the receiver: findings
    name the root; `segment_text`/`entry_text` may hold {kind}, {namespace} and {name}."""

    flow: str
    roots: tuple[Kind, ...]
    hop: str
    subscriber: HeartbeatSubscriber
    segment_text: str
    entry_text: str
    classes: tuple[str, tuple[str, ...]] | None = None
    # Where in the root's object the address of the next hop is (a Broker's trigger
    # channel), what to call it and what lies behind it ({kind}, {namespace}, {name}):
    # `smoke` injects a second event there to tell which of the synchronous hops failed.
    inner_address: tuple[str, ...] | None = None
    inner_entry_text: str = ""
    inner_segment_text: str = ""

    def root_kind(self, kind: str) -> Kind | None:
        """The root kind of this name (a `FlowReport.kind`), if it is probed."""
        return next((k for k in self.roots if k.kind == kind), None)


@dataclass(frozen=True, slots=True)
class DataPlane:
    """What probing needs of a profile. For a mesh of Applications (Kyma 1.x): its hops,
    the Broker a namespace must have Ready to be probed, the Channel whose `status.address`
    is the channel hop's URL, and the kind of the heartbeat Triggers. For a mesh of flows
    (Knative v1): which flows are probed, at which hop, with which heartbeat object
    (`flows`). A combined profile has both."""

    hops: tuple[DataHop, ...] = ()
    broker: ObjectAt | None = None
    channel: ObjectAt | None = None
    trigger: Kind | None = None
    flows: tuple[FlowProbe, ...] = ()

    def hop(self, hop_id: str) -> DataHop:
        for hop in self.hops:
            if hop.id == hop_id:
                return hop
        raise KeyError(hop_id)

    def flow(self, flow_id: str) -> FlowProbe | None:
        return next((f for f in self.flows if f.flow == flow_id), None)

    @property
    def subscriber_kinds(self) -> tuple[Kind, ...]:
        """The kinds of the heartbeat objects probing writes (Triggers, Subscriptions)."""
        kinds = [self.trigger] if self.trigger is not None else []
        kinds += [f.subscriber.kind for f in self.flows]
        return tuple(dict.fromkeys(kinds))


@dataclass(frozen=True, slots=True)
class Flow:
    """A unit of health rooted at one object (Knative has no Application): a Broker with
    its Triggers, a Channel with its Subscriptions, a source with its sink. The first link
    is the root itself (the builder binds it to the root object); the others are found from
    it with {flow} = the root's name and {namespace} = its namespace."""

    id: str
    roots: tuple[Kind, ...]
    links: tuple[Link, ...]
    description: str
    # A root owned by an object of one of these kinds is part of its owner's flow, not one
    # of its own (the InMemoryChannel a Channel or Broker made).
    not_if_owned_by: tuple[Kind, ...] = ()
    # (kind, path): objects naming a root of this flow by name at `path` in their own
    # namespace (a Trigger's spec.broker). A root they name that does not exist is reported
    # as a flow whose root is missing: it is the root cause of what they cannot do.
    referrers: tuple[tuple[Kind, tuple[str, ...]], ...] = ()


@dataclass(frozen=True, slots=True)
class Profile:
    name: str
    # The unit of health when the mesh has one (Kyma's Application); None: flows only.
    application: Kind | None
    kinds: tuple[Kind, ...]
    links: tuple[Link, ...]
    components: tuple[Component, ...]
    namespace_sources: tuple[NamespaceSource, ...]
    # Webhook configurations pointing at Services in these namespaces are checked.
    system_namespaces: tuple[str, ...]
    # spec.services[] entries of this type mark an Events service.
    events_entry_type: str = "Events"
    webhook_kinds: tuple[Kind, ...] = field(default_factory=tuple)
    # Kinds a cluster may lack without harm (alternatives, like two channel implementations).
    optional_kinds: tuple[Kind, ...] = field(default_factory=tuple)
    # What probing injects into and blames (None: the profile cannot be probed).
    data_plane: DataPlane | None = None
    # Kinds whose presence (objects in a dump, served resources on a cluster) tells that a
    # cluster runs this mesh: what `--profile auto` looks for.
    markers: tuple[Kind, ...] = field(default_factory=tuple)
    # One line for `--profile` help and detection messages.
    description: str = ""
    # The units of health rooted at an object (flows[] of the report).
    flows: tuple[Flow, ...] = field(default_factory=tuple)

    @property
    def all_links(self) -> tuple[Link, ...]:
        """The application links, then every flow's."""
        return (*self.links, *(link for flow in self.flows for link in flow.links))

    def link(self, link_id: str) -> Link:
        for link in self.all_links:
            if link.id == link_id:
                return link
        raise KeyError(link_id)

    def kind(self, key: str) -> Kind | None:
        for kind in self.kinds:
            if kind.key == key:
                return kind
        return None
