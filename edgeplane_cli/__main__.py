from edgeplane_cli import main

main()
