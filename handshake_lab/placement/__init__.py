"""Where the two ends of a lab live."""
