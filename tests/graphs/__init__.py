"""User graphs the batched-graph tests run (as a user would write them, with `batched` models)."""
