"""The running appliance: building, starting, reloading and stopping it; logging and systemd."""
