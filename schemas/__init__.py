"""What goes in and out over HTTP, and nothing else."""
