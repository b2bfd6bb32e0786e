"""MQTT output: Sparkplug B 3.0 edge node and a plain JSON unified namespace (docs/mqtt.md)."""
