"""What operators read to see what the cloud is doing: structured logs with request IDs (`logs`, `trace`),
Prometheus metrics (`metrics`, `access`), the fleet at a glance (`fleet`) and versioned notifications."""
