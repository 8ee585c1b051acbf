"""The Envoy gateway: descriptor set, config rendering and the Envoy process."""
