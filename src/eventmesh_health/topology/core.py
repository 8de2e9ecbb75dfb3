"""Built-in Kubernetes kinds every profile reads (system components, pods, webhooks)."""

from __future__ import annotations

from eventmesh_health.topology import Kind

DEPLOYMENT = Kind("apps/v1", "Deployment", "deployments")
POD = Kind("v1", "Pod", "pods")
SERVICE = Kind("v1", "Service", "services")
ENDPOINTS = Kind("v1", "Endpoints", "endpoints")
ENDPOINT_SLICE = Kind("discovery.k8s.io/v1", "EndpointSlice", "endpointslices")
NAMESPACE = Kind("v1", "Namespace", "namespaces", False)
VALIDATING_WEBHOOK = Kind(
    "admissionregistration.k8s.io/v1",
    "ValidatingWebhookConfiguration",
    "validatingwebhookconfigurations",
    False,
)
MUTATING_WEBHOOK = Kind(
    "admissionregistration.k8s.io/v1",
    "MutatingWebhookConfiguration",
    "mutatingwebhookconfigurations",
    False,
)
CRD = Kind(
    "apiextensions.k8s.io/v1", "CustomResourceDefinition", "customresourcedefinitions", False
)

CORE_KINDS = (
    DEPLOYMENT, POD, SERVICE, ENDPOINTS, ENDPOINT_SLICE, NAMESPACE,
    VALIDATING_WEBHOOK, MUTATING_WEBHOOK,
)
