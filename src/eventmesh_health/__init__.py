"""eventmesh-health: health of a Kyma / Knative event mesh — what is broken, and where."""

# Before any module of the analysis is imported: whether its compiled build may run.
from eventmesh_health import compiled as compiled
