"""Allow ``python -m brainmatch``."""

from brainmatch.cli.main import main

if __name__ == "__main__":
    main()
