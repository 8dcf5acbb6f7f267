#!/bin/sh
# Example notify_command: mails every mmm notice, as MMM and mmm-manager mailed operators.
#   [monitor]
#   notify_command = "/etc/mmm/hooks/notify-mail.sh"
# mmm runs it once per notice, in order, with one JSON object on stdin:
#   {"at_ms":1795833906000,"host":"db1","message":"State of host 'db1' changed from ONLINE to HARD_OFFLINE (...)"}
# It must finish within 10 s (it is killed then); the monitor never waits for it.
# Needs a local MTA and mail(1) (Debian: mailutils). Set the recipient here or in the
# monitor's environment.
set -eu
to="${MMM_NOTIFY_TO:-root}"
event="$(cat)"
host="$(printf '%s' "$event" | sed -n 's/.*"host":"\([^"]*\)".*/\1/p')"
message="$(printf '%s' "$event" | sed -n 's/.*"message":"\(.*\)"}$/\1/p')"
printf '%s\n\n%s\n' "$message" "$event" | mail -s "mmm: ${host:-cluster}: $message" "$to"
