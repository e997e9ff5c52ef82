"""What the gateway tells its operators: metrics, per-minute counts, recent events."""
