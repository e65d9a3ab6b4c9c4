#!/bin/sh
# Print alertmanager.yml ($1) with a webhook on each receiver whose URL is in the environment:
# a line `# webhook: NAME` becomes that receiver's webhook_configs when $NAME is set, and
# stays a comment (no integration: a null receiver) when it is not. Alertmanager reads no
# environment itself, and its url_file is newer than the 0.25 the tests run (POSIX sh + awk:
# the busybox of the Alertmanager image runs it).
set -eu
awk '
  match($0, /^ *# webhook: [A-Z_]+$/) {
    indent = substr($0, 1, index($0, "#") - 1)
    name = substr($0, index($0, ": ") + 2)
    url = ENVIRON[name]
    if (url != "") {
      if (url ~ /["\\[:space:]]/) { print name ": a URL without quotes, backslashes or spaces" > "/dev/stderr"; exit 2 }
      print indent "webhook_configs:"
      print indent "  - url: \"" url "\""
      print indent "    send_resolved: true"
      next
    }
  }
  { print }
' "$1"
