#!/usr/bin/env bash
# The quickstart behind `make run`: installs the few Debian packages the
# bundled examples need, puts the examples in a fresh git repository, and
# runs `merlin up` on it. Ctrl-C stops Merlin and every model server.
#
#   hack/quickstart.sh [BIN]     BIN defaults to bin/merlin
#
# Environment: MERLIN_LISTEN (default 127.0.0.1:8080), MERLIN_QUICKSTART_DIR
# (default: a new temporary directory).
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
bin=${1:-$root/bin/merlin}
listen=${MERLIN_LISTEN:-127.0.0.1:8080}

"$root/hack/test-deps.sh" --quick-run

dir=${MERLIN_QUICKSTART_DIR:-$(mktemp -d "${TMPDIR:-/tmp}/merlin-quickstart.XXXXXX")}
if [[ ! -d $dir/.git ]]; then
  mkdir -p "$dir"
  cp -R "$root/examples/." "$dir/"
  git -C "$dir" init -q -b main
  git -C "$dir" add -A
  git -C "$dir" -c user.name=quickstart -c user.email=quickstart@merlin.dev \
    commit -q -m "bundled examples"
fi

cat >&2 <<MSG
quickstart: the examples are committed in $dir
quickstart: to roll out a retrained model, in another terminal:
  cd $dir && /usr/bin/python3 iris-sklearn/train.py --seed 7 --c 0.05 \\
    && git commit -qam 'retrain iris' && curl -si http://$listen/v1/models/iris-sklearn:predict -d '{"instances": [[5.1, 3.5, 1.4, 0.2]]}'
MSG
exec "$bin" up "$dir" --listen "$listen"
