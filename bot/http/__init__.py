"""The bot's HTTP server: /healthz, /metrics and the webhook."""
