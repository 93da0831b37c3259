#!/usr/bin/env bash
# The `dlsec-verify` pre-commit hook: verify every signed model that a commit touches.
#
#   dlsec-verify-changed.sh [--pub DIR] [--classical-only] [--] FILE...
#
# pre-commit passes the hook's args, then the changed files (paths relative to the repository
# root, where it runs the hook). A file belongs to a signed model when a folder above it holds
# model.sig (a signed folder; every ancestor that holds one is verified, since each signature
# covers the file) or when FILE.sig lies beside it (a signed single file); a changed FILE.sig
# means FILE. Staged deletions count too: pre-commit does not pass deleted files, and a file
# removed from a signed folder breaks its signature all the same. Each model is verified once,
# all of them even after a failure, so the output names every broken one; exit 1 if any is.
# Written for bash 3.2 too (macOS): no associative arrays, guarded empty-array expansions.
set -euo pipefail

verify_opts=()
while (($#)); do
  case "$1" in
    --pub)
      (($# >= 2)) || { echo "dlsec-verify: --pub needs a key directory" >&2; exit 2; }
      verify_opts+=(--pub "$2")
      shift 2
      ;;
    --pub=*) verify_opts+=("$1"); shift ;;
    --classical-only) verify_opts+=("$1"); shift ;;
    --) shift; break ;;
    -*)
      echo "dlsec-verify: unknown option $1 (accepted: --pub DIR, --classical-only)" >&2
      exit 2
      ;;
    *) break ;;
  esac
done

models=()
add_model() {
  local known
  for known in ${models[@]+"${models[@]}"}; do
    [[ $known == "$1" ]] && return 0
  done
  models+=("$1")
}

map_file() {
  local path=$1 dir
  if [[ $path == *.sig && ${path##*/} != model.sig && -f ${path%.sig} ]]; then
    add_model "${path%.sig}"
  fi
  [[ -f $path.sig ]] && add_model "$path"
  # Every folder above the file, up to the repository root (.), with bash's own string
  # operations: --all-files may hand over thousands of paths.
  dir=$path
  while [[ $dir == */* ]]; do
    dir=${dir%/*}
    [[ -f $dir/model.sig ]] && add_model "$dir"
  done
  [[ -f model.sig ]] && add_model "."
  return 0
}

for path in "$@"; do
  map_file "$path"
done

if git rev-parse --git-dir >/dev/null 2>&1; then
  while IFS= read -r -d '' path; do
    map_file "$path"
  done < <(git diff --cached --name-only --diff-filter=D -z --no-renames)
fi

status=0
for model in ${models[@]+"${models[@]}"}; do
  dlsec verify ${verify_opts[@]+"${verify_opts[@]}"} "$model" || status=1
done
exit "$status"
