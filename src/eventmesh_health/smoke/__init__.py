"""`eventmesh-health smoke`: one event through the mesh, where it stopped, nothing left behind.

    objects.py   the run's object: labels, expiry annotation, leftovers (pure)
    plan.py      what to create and where to inject, from the profile's data plane (pure)
    receiver.py  the run's receiver (probing's CloudEvents reader and signature check)
    run.py       the steps: leftovers, created, ready, entry, received, localise, cleanup
    command.py   the run's life in the CLI: target, signals, exit code, the text report
"""
