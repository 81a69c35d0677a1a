"""Example user graphs whose model calls batch-agent batches (`batch-agent map`, `map_graph`)."""
