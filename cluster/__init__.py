"""medtune: cluster."""
