"""The protocol-neutral data path: the data model, the fan-out pipeline, the latest-value store,
the write service with its audit log, and derived tags."""
