"""HTTP plumbing every endpoint shares: errors, bodies, client address, limits, auth."""
