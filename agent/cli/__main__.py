"""`python -m agent.cli`: the same as the `batch-agent` console script."""

from agent.cli.app import main

main()
