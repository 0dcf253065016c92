#!/bin/bash
# The main job: mount a tpdefs store with defaults, train a small model with Debian's PyTorch
# writing a checkpoint every 20 steps into the mount with plain torch.save, keep the last 3
# (deleting older ones, as training frameworks do), print what each checkpoint costs to store,
# check the newest loads back bit-exact, unmount. A few minutes on 2 cores.
#   DEMO_DIR=dir   where the store and the mount point go (default: a new /tmp directory)
#   extra arguments go to scripts/demo_train.py (--steps, --every, --keep, --width)
set -euo pipefail
cd "$(dirname "$0")/.."
TPDEFS=${TPDEFS:-build/tpdefs}
work=${DEMO_DIR:-$(mktemp -d /tmp/tpdefs-demo.XXXXXX)}
mkdir -p "$work/mnt"
"$TPDEFS" "$work/store" "$work/mnt" --log-file "$work/tpdefs.log"
trap 'fusermount3 -u "$work/mnt" 2>/dev/null || fusermount3 -uz "$work/mnt" 2>/dev/null || true' EXIT
echo "demo: store $work/store mounted on $work/mnt"
/usr/bin/python3 scripts/demo_train.py "$work/mnt" "$@"
ls -l "$work/mnt"
du -sh --apparent-size "$work/mnt" | sed 's/^/demo: logical /'
du -sh "$work/store" | sed 's/^/demo: store on disk /'
fusermount3 -u "$work/mnt"
trap - EXIT
echo "demo: unmounted; the store stays in $work/store (mount it again with: $TPDEFS $work/store $work/mnt)"
