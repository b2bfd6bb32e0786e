"""The IP side: the outputs manager, the InfluxDB forwarder, the OPC UA server (and MQTT)."""
