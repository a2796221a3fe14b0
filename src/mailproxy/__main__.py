"""``python -m mailproxy`` runs the ``mail-proxy`` command line."""

from mailproxy.entrypoints.cli import main

if __name__ == "__main__":
    main()
