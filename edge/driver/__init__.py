"""The driver protocol and the registry that finds drivers through the ``edge.drivers`` entry points."""
