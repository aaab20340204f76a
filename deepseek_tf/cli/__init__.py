"""The `deepseek-tf` command line: one console script, a subcommand per job."""
