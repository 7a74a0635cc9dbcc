from edgeplane.cli import main

main()
