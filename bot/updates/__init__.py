"""What happens to every update: stored in the inbox, followed for logs and metrics, the person's language."""
