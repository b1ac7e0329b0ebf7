"""Metrics and logs: what operators read to see what the cloud is doing."""
