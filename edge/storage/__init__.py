"""The durable spool on disk and the local historian that reads it."""
