pytest_plugins = ["tests.envtest.fixtures"]
