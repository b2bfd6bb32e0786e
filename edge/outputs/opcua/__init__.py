"""The OPC UA server: address space, value fast path, aggregates, channel security."""
