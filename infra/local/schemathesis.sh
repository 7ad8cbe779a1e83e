#!/usr/bin/env bash
# Fuzz every service's OpenAPI document with schemathesis on the running local stack.
#
#   infra/local/schemathesis.sh [max-examples]     (default 20 per operation and run)
#
# Starts the stack as run.sh does (services.sh, with the rate limits out of the way: every 429
# is documented, and a fuzzer held at the limiter tests nothing else), logs in a member, an
# admin and a platform operator (dev login), opens an election and takes a voting token, then
# runs schemathesis (pinned, installed into a venv under $EKKLESIA_STATE_DIR) against each
# listener's /openapi.json, once per kind of caller:
#   members-fn :8082        anonymous (every route is public)
#   events-svc :8081        anonymous, member, admin, platform operator (/v1/ops/* only)
#   ingest :8080            anonymous, with a voting token (ballots of the open election)
#   ingest internal :8079   unsigned, signed with the dev S2S key (schemathesis_hooks.py)
#   worker :9090            anonymous (operational routes only)
# Checks: no 5xx, and every answer's status, content type and body as documented. Exits 1 if
# any run fails; logs in $EKKLESIA_STATE_DIR/schemathesis/. The stack keeps running (its dev
# database now holds the fuzzer's elections); stop it with down.sh.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=env.sh
source "$here/env.sh"

max_examples=${1:-20}
[[ $max_examples =~ ^[1-9][0-9]*$ ]] || { echo "usage: $0 [max-examples]" >&2; exit 2; }
schemathesis_version=4.32.5
started=$SECONDS

venv=$EKKLESIA_STATE_DIR/schemathesis-venv
if ! "$venv/bin/st" --version 2>/dev/null | grep -qF "$schemathesis_version"; then
  echo "== installing schemathesis $schemathesis_version into $venv"
  mkdir -p "$EKKLESIA_STATE_DIR"
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check "schemathesis==$schemathesis_version"
fi

export RATE_LIMIT_PER_CLIENT=1000000 RATE_LIMIT_GLOBAL=1000000 RATE_LIMIT_PER_TOKEN=1000000
export RECEIPT_RATE_PER_CLIENT=1000000 RECEIPT_RATE_GLOBAL=1000000
export LOGIN_RATE_PER_CLIENT=1000000 LOGIN_RATE_GLOBAL=1000000
export EVENTS_RATE_PER_MEMBER=1000000 EVENTS_RATE_GLOBAL=1000000
# shellcheck source=services.sh
source "$here/services.sh"
stack_ready=$SECONDS

# --- callers ------------------------------------------------------------------------
# Person numbers from the demo exports services.sh loaded: line 2 is the admin, then voters.
admin_id=$("$bin/loadtest" members-csv --voters 2 | sed -n 2p | cut -d, -f1)
voter_id=$("$bin/loadtest" members-csv --voters 2 | sed -n 3p | cut -d, -f1)
member_id=$("$bin/loadtest" members-csv --voters 2 | sed -n 4p | cut -d, -f1)
ops_id=$("$bin/loadtest" members-csv --platform-ops | sed -n 2p | cut -d, -f1)

# call METHOD URL BEARER [JSON]: the answer's body; fails on any status but 2xx.
call() {
  curl -fsS -X "$1" "$2" -H "Authorization: Bearer $3" ${4:+-H 'Content-Type: application/json' -d "$4"}
}
session() {
  curl -fsS -X POST "$MEMBERS_URL/v1/auth/dev-login" -H 'Content-Type: application/json' \
    -d "{\"national_id\": \"$1\"}" | jq -er .session_token
}
admin=$(session "$admin_id")
voter=$(session "$voter_id")
member=$(session "$member_id")
ops=$(session "$ops_id")
election=$(call POST "$EVENTS_URL/v1/elections" "$admin" '{"title": "schemathesis", "question": "Fuzz?",
  "kind": "single", "options": [{"id": "yes", "label": "Yes"}, {"id": "no", "label": "No"}], "max_choices": 1}' |
  jq -er .id)
call POST "$EVENTS_URL/v1/elections/$election/open" "$admin" >/dev/null
voting_token=$(call POST "$EVENTS_URL/v1/elections/$election/token" "$voter" | jq -er .token)
echo "== open election $election; a voting token for it; sessions of a member, an admin and a platform operator"

# --- runs ---------------------------------------------------------------------------
work=$EKKLESIA_STATE_DIR/schemathesis
rm -rf "$work" && mkdir -p "$work"
# Fixed path parameters for the runs that need the open election rather than random ids.
printf '[parameters]\n"path.id" = "%s"\n' "$election" >"$work/open-election.toml"

passed=0 failed=()
# fuzz NAME URL [schemathesis run options...]; `--config FILE` first to use a config file.
fuzz() {
  local name=$1 url=$2 config=() t0=$SECONDS rc=0
  shift 2
  if [[ ${1:-} == --config ]]; then config=(--config-file "$2") && shift 2; fi
  # From the work directory: schemathesis keeps its example database there.
  (cd "$work" && "$venv/bin/st" "${config[@]}" run "$url/openapi.json" \
    --checks not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance \
    --max-examples "$max_examples" --request-timeout 20 --no-color "$@") >"$work/$name.log" 2>&1 || rc=$?
  if ((rc == 0)); then
    printf '%-34s passed  (%3d s)\n' "$name" $((SECONDS - t0))
    passed=$((passed + 1))
  else
    printf '%-34s FAILED  (%3d s, exit %d)\n' "$name" $((SECONDS - t0)) "$rc"
    if grep -q '=== \(FAILURES\|ERRORS\) ===' "$work/$name.log"; then
      sed -n '/=== \(FAILURES\|ERRORS\) ===/,$p' "$work/$name.log"
    else
      tail -n 30 "$work/$name.log"
    fi
    failed+=("$name")
  fi
}
echo "== schemathesis $schemathesis_version, $max_examples examples per operation (logs: $work)"
fuzz members-fn "$MEMBERS_URL"
fuzz events-svc.anonymous "$EVENTS_URL"
fuzz events-svc.member "$EVENTS_URL" --config "$work/open-election.toml" -H "Authorization: Bearer $member"
fuzz ingest.anonymous "$INGEST_URL"
fuzz ingest.voting-token "$INGEST_URL" --config "$work/open-election.toml" \
  --include-path '/v1/elections/{id}/ballots' -H "Authorization: Bearer $voting_token"
fuzz events-svc.admin "$EVENTS_URL" -H "Authorization: Bearer $admin"
fuzz events-svc.platform-operator "$EVENTS_URL" --include-path-regex '^/v1/ops/' -H "Authorization: Bearer $ops"
fuzz ingest-internal.unsigned "$ELECTIONS_URL"
S2S_SIGN_TENANT=demo-party SCHEMATHESIS_HOOKS="$here/schemathesis_hooks.py" \
  fuzz ingest-internal.signed "$ELECTIONS_URL"
fuzz worker "http://127.0.0.1:9090"

# The operator's run switches the queue flag at random; the stack goes on in queue mode.
DATABASE_URL=$EKKLESIA_ADMIN_DATABASE_URL "$bin/queue-mode" set on --actor schemathesis.sh >/dev/null

echo "== stack started in $((stack_ready - started)) s, fuzzed in $((SECONDS - stack_ready)) s; the stack keeps running (stop it with infra/local/down.sh)"
((${#failed[@]})) && echo "failed: ${failed[*]} (logs in $work)" >&2
# The closing line CI reads: one per run.
echo "schemathesis: $passed passed, ${#failed[@]} failed"
((${#failed[@]} == 0))
