"""`serve`: the always-on checker. Watches the cluster, keeps every Application's health
current, and reports it through the REST API, metrics, health objects and Events."""
