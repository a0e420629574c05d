"""The `statecar` command line: one console script whose subcommands start each program."""
