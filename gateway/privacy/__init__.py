"""Personal data and secrets kept out of logs, disk and screens: scrubbing and masking."""
