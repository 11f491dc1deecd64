"""Small shared helpers: errors, atomic file writes, logging."""
