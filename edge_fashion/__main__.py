from edge_fashion import cli

cli.main()
