"""medtune: dashboards."""
