#!/bin/sh
# Runs the command as the unprivileged user "mlm". Started as root (the default), it first makes the data and
# Hugging Face cache folders writable by that user: a bind mount such as ./data is created by Docker as root.
# Started as another user (docker run --user ...), it runs the command as that user, unchanged.
set -e
if [ "$(id -u)" = "0" ]; then
    for dir in /app/data "${HF_HOME:-/cache/huggingface}"; do
        mkdir -p "$dir"
        # Only what is not the user's yet is changed (a cache already theirs is just looked at).
        find "$dir" ! -user mlm -exec chown mlm:mlm {} + 2>/dev/null || true
    done
    exec setpriv --reuid=mlm --regid=mlm --init-groups -- "$@"
fi
exec "$@"
