from eventmesh_health.cli import main

main()
