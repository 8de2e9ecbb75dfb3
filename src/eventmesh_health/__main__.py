from eventmesh_health.cli import run

run()
