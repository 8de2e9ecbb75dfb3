"""eventmesh-health: health of a Kyma / Knative event mesh — what is broken, and where."""
