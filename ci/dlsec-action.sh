#!/usr/bin/env bash
# The dlsec GitHub Action (action.yml) does its work here, so that it runs the same way on a
# laptop:
#
#   INPUT_INSTALL=false INPUT_PATHS=models/ GITHUB_OUTPUT=/tmp/outputs ci/dlsec-action.sh
#
# Inputs (environment): INPUT_PATHS (one path per line), INPUT_CAMPAIGN, INPUT_MODEL, INPUT_DATA,
# INPUT_OUT (default dlsec-reports), INPUT_DLSEC_SPEC (default: this checkout), INPUT_TORCH_SPEC,
# INPUT_FAIL_ON_UNSCANNABLE (default true), INPUT_INSTALL (default true).
#
# Every report is written before the exit status is decided, so the workflow's upload steps
# (`if: always()`) find them. Outputs go to $GITHUB_OUTPUT (and, as `dlsec-action: name=value`
# lines, to stdout): verdict (pass, fail or error), scan-sarif, assess-sarif, junit, reports.
# Exit status: 0 pass; 1 an unsafe or unscannable file, or a failed gate; 2 dlsec could not run
# (bad input, a crash) or an install failed.
set -euo pipefail

action_dir=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
paths_input=${INPUT_PATHS:-}
campaign=${INPUT_CAMPAIGN:-}
model=${INPUT_MODEL:-}
data=${INPUT_DATA:-}
out=${INPUT_OUT:-dlsec-reports}
dlsec_spec=${INPUT_DLSEC_SPEC:-}
torch_spec=${INPUT_TORCH_SPEC-torch --index-url https://download.pytorch.org/whl/cpu}

verdict=error
scan_sarif=""
assess_sarif=""
junit=""

output() {
  if [[ -n ${GITHUB_OUTPUT:-} ]]; then
    printf '%s=%s\n' "$1" "$2" >>"$GITHUB_OUTPUT"
  fi
  printf 'dlsec-action: %s=%s\n' "$1" "$2"
}

# Runs on every exit, a failed install included, so the outputs are always there.
write_outputs() {
  output verdict "$verdict"
  output scan-sarif "$scan_sarif"
  output assess-sarif "$assess_sarif"
  output junit "$junit"
  output reports "$out"
}
trap write_outputs EXIT

problem() {
  echo "::error title=dlsec::$1"
}

# One annotation per SARIF result (file, rule, message) in the log and on the pull request,
# also for repositories that do not upload SARIF to code scanning.
annotate() {
  local python
  python=$(command -v python3 || command -v python) || return 0
  "$python" - "$1" <<'PY' || echo "dlsec-action: could not read $1" >&2
import json
import sys


def escape(text, prop=False):
    text = str(text).replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")
    return text.replace(":", "%3A").replace(",", "%2C") if prop else text


with open(sys.argv[1], encoding="utf-8") as f:
    log = json.load(f)
for run in log.get("runs", []):
    for result in run.get("results", []):
        level = {"error": "error", "warning": "warning"}.get(result.get("level", "warning"), "notice")
        props = [f"title={escape(result.get('ruleId', 'dlsec'), True)}"]
        for location in result.get("locations", [])[:1]:
            uri = location.get("physicalLocation", {}).get("artifactLocation", {}).get("uri")
            if uri:
                props.insert(0, f"file={escape(uri, True)}")
        print(f"::{level} {','.join(props)}::{escape(result.get('message', {}).get('text', ''))}")
PY
}

# to_boolean NAME VALUE VAR: VAR=true or false, or exit 2 naming the input.
to_boolean() {
  case "$(printf '%s' "$2" | tr '[:upper:]' '[:lower:]')" in
    true | yes | 1) printf -v "$3" true ;;
    false | no | 0 | "") printf -v "$3" false ;;
    *)
      problem "input $1 must be true or false, not '$2'"
      exit 2
      ;;
  esac
}
fail_on_unscannable=true
install=true
to_boolean fail-on-unscannable "${INPUT_FAIL_ON_UNSCANNABLE:-true}" fail_on_unscannable
to_boolean install "${INPUT_INSTALL:-true}" install

paths=()
while IFS= read -r line || [[ -n $line ]]; do
  line=${line#"${line%%[![:space:]]*}"}
  line=${line%"${line##*[![:space:]]}"}
  if [[ -n $line ]]; then
    paths+=("$line")
  fi
done <<<"$paths_input"

assess=false
if [[ -n $campaign || -n $model ]]; then
  assess=true
  if [[ -z $model || -z $data ]]; then
    problem "an assessment needs both the model and the data inputs"
    exit 2
  fi
fi
if [[ ${#paths[@]} -eq 0 && $assess == false ]]; then
  problem "nothing to do: give paths to scan, or a model and data (and a campaign) to assess"
  exit 2
fi

if [[ $install == true ]]; then
  python=$(command -v python3 || command -v python)
  # PyTorch first, from the index torch-spec names (the CPU build by default), so that
  # installing dlsec finds its torch requirement met instead of pulling the CUDA build.
  if [[ -n $torch_spec ]]; then
    read -r -a torch_args <<<"$torch_spec"
    "$python" -m pip install --disable-pip-version-check "${torch_args[@]}" || {
      problem "installing PyTorch ($torch_spec) failed"
      exit 2
    }
  fi
  if [[ -n $dlsec_spec ]]; then
    read -r -a dlsec_args <<<"$dlsec_spec"
  else
    dlsec_args=("$action_dir")
  fi
  "$python" -m pip install --disable-pip-version-check "${dlsec_args[@]}" || {
    problem "installing dlsec (${dlsec_spec:-$action_dir}) failed"
    exit 2
  }
fi
if ! command -v dlsec >/dev/null; then
  problem "dlsec is not on PATH (install it, or leave the install input true)"
  exit 2
fi
if [[ $install == true ]]; then
  dlsec version # what was installed, in the log (it imports torch: seconds)
fi

mkdir -p "$out"
failed=false
errored=false

if [[ ${#paths[@]} -gt 0 ]]; then
  scan_args=(scan --format sarif --output "$out/scan.sarif")
  if [[ $fail_on_unscannable == false ]]; then
    scan_args+=(--allow-unscannable)
  fi
  rc=0
  dlsec "${scan_args[@]}" -- "${paths[@]}" || rc=$?
  if [[ -f $out/scan.sarif ]]; then
    scan_sarif=$out/scan.sarif
    annotate "$scan_sarif"
  fi
  case $rc in
    0) echo "dlsec scan: passed (no unsafe file; see $out/scan.sarif)" ;;
    1) failed=true; problem "dlsec scan: a model file runs code when loaded (see $out/scan.sarif)" ;;
    3) failed=true; problem "dlsec scan: a file could not be scanned (fail-on-unscannable is true)" ;;
    *) errored=true; problem "dlsec scan could not run (exit $rc)" ;;
  esac
fi

if [[ $assess == true ]]; then
  assess_out=$out/assess
  assess_args=(assess --model "$model" --data "$data" --out "$assess_out")
  if [[ -n $campaign ]]; then
    assess_args+=(--campaign "$campaign")
  fi
  rc=0
  dlsec "${assess_args[@]}" || rc=$?
  if [[ -f $assess_out/report.sarif ]]; then
    assess_sarif=$assess_out/report.sarif
    annotate "$assess_sarif"
  fi
  if [[ -f $assess_out/junit.xml ]]; then
    junit=$assess_out/junit.xml
  fi
  # Exit 1 is a failed gate only when the reports were written; otherwise dlsec stopped early.
  if [[ $rc -eq 0 ]]; then
    echo "dlsec assess: every gate passed"
  elif [[ $rc -eq 1 && -n $junit ]]; then
    failed=true
    problem "dlsec assess: a gate failed (see $junit)"
  else
    errored=true
    problem "dlsec assess could not run (exit $rc)"
  fi
fi

if [[ $errored == true ]]; then
  verdict=error
  exit 2
elif [[ $failed == true ]]; then
  verdict=fail
  exit 1
fi
verdict=pass
