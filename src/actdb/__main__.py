from actdb.cli import main

main()
