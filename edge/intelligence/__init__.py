"""Edge intelligence: alarms, rules, safe expressions, wired onto a running appliance."""
