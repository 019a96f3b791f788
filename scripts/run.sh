# shellcheck shell=bash
# `run CMD...`, sourced by the reproduce scripts: print the command, then run it as a child the
# script waits on, so stopping the script (kill PID, Ctrl-C) stops the command too instead of
# leaving it running beside a restarted script. The command's exit status is run's.
child=""
trap '[ -z "$child" ] || kill "$child" 2>/dev/null; exit 143' TERM INT
run() { echo "+ $*" >&2; "$@" & child=$!; wait "$child"; }
