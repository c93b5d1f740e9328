#!/bin/sh
# Runs the command as an unprivileged user. Started as root (the default):
# - if ./data (mounted at /app/data) belongs to someone on the host, the command runs as that owner (uid and
#   gid), so the database and backups stay theirs and nothing on the host changes hands;
# - if Docker created it (owned by root), it becomes the image's user "mlm" (uid 10001), which runs the command.
# The Hugging Face cache (a named volume) is made writable by whichever user that is.
# Started as another user (docker run --user ...), it runs the command as that user, unchanged.
set -e
if [ "$(id -u)" = "0" ]; then
    data=/app/data
    cache="${HF_HOME:-/cache/huggingface}"
    mkdir -p "$data" "$cache"
    owner=$(stat -c %u "$data")
    group=$(stat -c %g "$data")
    if [ "$owner" = "0" ]; then
        owner=$(id -u mlm)
        group=$(id -g mlm)
        find "$data" ! -user "$owner" -exec chown "$owner:$group" {} + 2>/dev/null || true
    fi
    # Only what is not the user's yet is changed (a cache already theirs is just looked at).
    find "$cache" ! -user "$owner" -exec chown "$owner:$group" {} + 2>/dev/null || true
    # ./guides as Docker created it (empty, root's): theirs, so `mlm-bot guides new` can write there.
    if [ -d /app/guides ] && [ "$(stat -c %u /app/guides)" = "0" ]; then
        chown "$owner:$group" /app/guides 2>/dev/null || true
    fi
    export HOME=/tmp  # root's home is not theirs (libraries keep small caches under $HOME)
    exec setpriv --reuid="$owner" --regid="$group" --clear-groups -- "$@"
fi
exec "$@"
