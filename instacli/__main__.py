"""`python -m instacli` (and so `accelerate launch -m instacli ...`) runs the CLI."""

from instacli.cli.main import main

if __name__ == "__main__":
    main()
