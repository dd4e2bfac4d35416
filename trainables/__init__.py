"""medtune: trainables."""
