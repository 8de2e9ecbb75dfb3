"""Real Knative Eventing v1 (knative.dev/eventing v0.48.0) for tests: see mesh.py."""
