#!/usr/bin/env bash
# prepare-eval-trees.sh - build the eval-dev kernel trees that bench/eval.py reviews.
#
# Usage: scripts/prepare-eval-trees.sh [OUT_DIR] [CASE_ID...]
#
#   OUT_DIR   where the case repos go (default $BOT_EVAL_TREES or /work/eval-trees);
#             keep it OUTSIDE the project checkout (each tree is a full kernel).
#   CASE_ID   only these cases (default: every case directory in the corpus).
#
# For each case this runs the corpus' own prepare.sh with PREPARE_WORKTREE=1, which
# leaves OUT_DIR/<id> (post-fix), OUT_DIR/<id>.pre-fix (pre-fix worktree),
# OUT_DIR/<id>.bug.patch and OUT_DIR/<id>.fix.patch.  It is idempotent: a case whose
# four outputs already exist is skipped, and a half-built case (an interrupted run)
# is removed and rebuilt.  The two base trees (6.1 and 6.12) are built first, once,
# in prepare.sh's cache (HELDOUT_CACHE, about 2 GB each; a few minutes each).
#
# Environment:
#   BOT_CORPUS_DIR     corpus root (default: ../shared/corpus next to the checkout)
#   BOT_EVAL_TREES     default OUT_DIR
#   LINUX_SOURCE_DIR, HELDOUT_CACHE  passed through to prepare.sh
#
# CI does not run this (too big); bench/eval.py is a bench, not a test.
set -euo pipefail

die() { echo "prepare-eval-trees: $*" >&2; exit 1; }

here=$(cd "$(dirname "$0")/.." && pwd)
corpus=${BOT_CORPUS_DIR:-$here/../shared/corpus}
[ -d "$corpus" ] || die "corpus not found at $corpus (set BOT_CORPUS_DIR)"
corpus=$(cd "$corpus" && pwd)
evaldev="$corpus/eval-dev"
prepare="$evaldev/prepare.sh"
[ -f "$prepare" ] || die "$prepare not found"

out=${1:-${BOT_EVAL_TREES:-/work/eval-trees}}
[ $# -gt 0 ] && shift
out=$(realpath -m "$out")
case "$out/" in
  "$here"/*) die "OUT_DIR $out is inside the project checkout; choose a directory outside it" ;;
esac

if [ $# -gt 0 ]; then
  cases=("$@")
else
  cases=()
  for d in "$evaldev"/*/; do
    [ -f "$d/meta.json" ] && cases+=("$(basename "$d")")
  done
fi
[ ${#cases[@]} -gt 0 ] || die "no cases found under $evaldev"

tree_of() {
  python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["tree"])' "$evaldev/$1/meta.json"
}

# validate every requested case before spending minutes on base builds
trees=()
for id in "${cases[@]}"; do
  case "$id" in */* | .* | "") die "bad case id '$id'" ;; esac
  [ -f "$evaldev/$id/meta.json" ] || die "no such case: $id"
  t=$(tree_of "$id")
  case " ${trees[*]} " in *" $t "*) ;; *) trees+=("$t") ;; esac
done

mkdir -p "$out"
for t in "${trees[@]}"; do
  echo "prepare-eval-trees: base tree $t" >&2
  bash "$prepare" --base-only "$t" >/dev/null
done

done_n=0 skipped=0 failed=()
for id in "${cases[@]}"; do
  repo="$out/$id" wt="$out/$id.pre-fix"
  if [ -d "$repo/.git" ] && [ -e "$wt/.git" ] && [ -s "$out/$id.bug.patch" ] && [ -s "$out/$id.fix.patch" ]; then
    echo "prepare-eval-trees: $id already prepared, skipping" >&2
    skipped=$((skipped + 1))
    continue
  fi
  # an interrupted earlier run leaves a partial case; prepare.sh refuses to overwrite it
  rm -rf "$repo" "$wt" "$out/$id.bug.patch" "$out/$id.fix.patch"
  echo "prepare-eval-trees: preparing $id" >&2
  if PREPARE_WORKTREE=1 bash "$prepare" "$evaldev/$id" "$out"; then
    done_n=$((done_n + 1))
  else
    failed+=("$id")
  fi
done

echo "prepare-eval-trees: $done_n prepared, $skipped already present, ${#failed[@]} failed${failed:+: ${failed[*]}}" >&2
[ ${#failed[@]} -eq 0 ]
