"""Field drivers shipped with the appliance (one folder per protocol)."""
