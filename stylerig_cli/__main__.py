"""``python -m stylerig_cli`` (used with ``torchrun``)."""

from stylerig_cli.app import main

if __name__ == "__main__":
    main()
