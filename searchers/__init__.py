"""medtune: searchers."""
