"""Industrial edge appliance: Modbus field side to OPC UA, InfluxDB and Grafana."""

__version__ = "0.1.0"
