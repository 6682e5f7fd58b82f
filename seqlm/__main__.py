from seqlm.cli.app import main

main()
