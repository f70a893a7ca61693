"""MQTT 5 sync between the device's outbox and the cloud, the topic contract, and a reference cloud peer."""
