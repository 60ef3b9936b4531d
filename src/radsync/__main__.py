from radsync.cli.main import main

main()
