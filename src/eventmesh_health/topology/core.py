"""Built-in Kubernetes kinds every profile reads (system components, pods, webhooks)."""

from __future__ import annotations

from eventmesh_health.topology import Kind

# Never a pod template: it holds env values.
DEPLOYMENT = Kind("apps/v1", "Deployment", "deployments",
                  fields=("spec.replicas", "spec.selector", "status"))
# application-operator runs as a StatefulSet in every Kyma 1.x (kyma@1.11.0-1.20.0:
# resources/application-connector/charts/application-operator/templates/controller.yaml).
STATEFULSET = Kind("apps/v1", "StatefulSet", "statefulsets",
                   fields=("spec.replicas", "spec.selector", "status"))
# Never the spec (env values); of the status, what tells a failing container.
POD = Kind("v1", "Pod", "pods", fields=(
    "status.phase", "status.reason", "status.message", "status.conditions",
    "status.containerStatuses[].name", "status.containerStatuses[].ready",
    "status.containerStatuses[].restartCount", "status.containerStatuses[].state",
    "status.containerStatuses[].lastState",
))
SERVICE = Kind("v1", "Service", "services", fields=("spec.selector", "spec.ports"))
ENDPOINTS = Kind("v1", "Endpoints", "endpoints", fields=("subsets",))
ENDPOINT_SLICE = Kind("discovery.k8s.io/v1", "EndpointSlice", "endpointslices",
                      fields=("addressType", "endpoints", "ports"))
NAMESPACE = Kind("v1", "Namespace", "namespaces", False, fields=("status.phase",))
_WEBHOOKS = ("webhooks[].name", "webhooks[].clientConfig.service", "webhooks[].failurePolicy")
VALIDATING_WEBHOOK = Kind(
    "admissionregistration.k8s.io/v1",
    "ValidatingWebhookConfiguration",
    "validatingwebhookconfigurations",
    False,
    fields=_WEBHOOKS,
)
MUTATING_WEBHOOK = Kind(
    "admissionregistration.k8s.io/v1",
    "MutatingWebhookConfiguration",
    "mutatingwebhookconfigurations",
    False,
    fields=_WEBHOOKS,
)
CRD = Kind(
    "apiextensions.k8s.io/v1", "CustomResourceDefinition", "customresourcedefinitions", False,
    fields=("spec.group", "spec.names", "spec.scope", "spec.versions[].name",
            "spec.versions[].served", "spec.versions[].storage", "status.conditions"),
)

CORE_KINDS = (
    DEPLOYMENT, STATEFULSET, POD, SERVICE, ENDPOINTS, ENDPOINT_SLICE, NAMESPACE,
    VALIDATING_WEBHOOK, MUTATING_WEBHOOK,
)
