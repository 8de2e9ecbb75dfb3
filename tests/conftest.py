pytest_plugins = ["tests.envtest.fixtures", "tests.knative.fixtures", "tests.tracing.fixtures"]
