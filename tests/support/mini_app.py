"""Mini App launch data for the tests, signed as Telegram signs it."""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from urllib.parse import urlencode


def signed_init_data(token: str, user_id: int = 4242, *, age_s: float = 0) -> str:
    """initData as Telegram signs it (https://core.telegram.org/bots/webapps#validating-data-received-via-the-mini-app),
    written here independently of the bot's check."""
    fields = {
        "auth_date": str(int(time.time() - age_s)),
        "query_id": "AAHdF6IQAAAAAN0XohDhrOrc",
        "user": json.dumps(
            {"id": user_id, "first_name": "Ann", "username": "ann", "language_code": "en"}, separators=(",", ":")
        ),
    }
    check = "\n".join(f"{k}={v}" for k, v in sorted(fields.items()))
    secret = hmac.new(b"WebAppData", token.encode(), hashlib.sha256).digest()
    fields["hash"] = hmac.new(secret, check.encode(), hashlib.sha256).hexdigest()
    return urlencode(fields)
