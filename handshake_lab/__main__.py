from handshake_lab.cli.app import main

main()
