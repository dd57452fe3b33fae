#!/usr/bin/env bash
# Keep the published leaderboards (~27 MB of run records and figures) out of what a remote call sends,
# without touching a file: `on` drops them from the git index and ignores them locally, so the tree that
# travels is the code plus what `carry` names; `off` restores the index from HEAD.  Only
# leaderboards/acdc-quick/sweep.yaml, which the remote sweep reads, stays in.  Commit nothing between
# `on` and `off`: the index then says the leaderboards are deleted.
#
#   bash benchmarks/remote/slim_tree.sh on     # before the remote calls
#   bash benchmarks/remote/slim_tree.sh off    # right after them
set -euo pipefail
cd "$(git rev-parse --show-toplevel)"
exclude=.git/info/exclude
comment="# added by benchmarks/remote/slim_tree.sh on; removed by off"
pattern="/leaderboards/"
case "${1:-}" in
  on)
    git rm -r -q --cached leaderboards
    git add -f leaderboards/acdc-quick/sweep.yaml
    grep -qxF "$comment" "$exclude" || printf '%s\n%s\n' "$comment" "$pattern" >> "$exclude"
    echo "sent with the next call: $( (git ls-files; git ls-files --others --exclude-standard) | xargs du -cb | tail -1 | cut -f1) bytes, plus what carry names"
    ;;
  off)
    awk -v comment="$comment" -v pattern="$pattern" \
        '$0 == comment { skip = 1; next } skip && $0 == pattern { skip = 0; next } { skip = 0; print }' \
        "$exclude" > "$exclude.tmp"
    mv "$exclude.tmp" "$exclude"
    git reset -q
    git status --short
    ;;
  *)
    echo "usage: $0 on|off" >&2
    exit 2
    ;;
esac
