from ttlx.cli import main

if __name__ == "__main__":  # not again in a spawned worker process, which imports this as __mp_main__
    main()
