"""Words and pictures: templates into Telegram HTML, keyword triggers, deep-link payloads, charts."""
