from ttlx.cli import main

main()
