#!/usr/bin/env bash
# A civkit (and strfry) write-policy plugin in bash: each public key may
# publish at most MAX events (first argument, default 10) per WINDOW
# seconds (second argument, default 60). Events from the operator and from
# federated boards (sourceType Import and Stream) are not counted.
#
# Each request is one JSON line on stdin; each answer one JSON line on stdout.
MAX=${1:-10}
WINDOW=${2:-60}
declare -A count start
hex='([0-9a-f]{64})'
while IFS= read -r line; do
  # The request's event starts with its id, then its pubkey (NIP-01 order).
  [[ $line =~ \"event\":\{\"id\":\"$hex\",\"pubkey\":\"$hex\" ]] || continue
  id=${BASH_REMATCH[1]}
  key=${BASH_REMATCH[2]}
  if [[ $line =~ \"sourceType\":\"(Import|Stream)\" ]]; then
    printf '{"id":"%s","action":"accept","msg":""}\n' "$id"
    continue
  fi
  now=$SECONDS
  if (( now - ${start[$key]:-0} >= WINDOW )) || [[ -z ${start[$key]} ]]; then
    start[$key]=$now
    count[$key]=0
  fi
  count[$key]=$(( ${count[$key]} + 1 ))
  if (( ${count[$key]} > MAX )); then
    printf '{"id":"%s","action":"reject","msg":"rate-limited: at most %d events per %d s"}\n' "$id" "$MAX" "$WINDOW"
  else
    printf '{"id":"%s","action":"accept","msg":""}\n' "$id"
  fi
done
