#!/usr/bin/env bash
# mosquitto-gdpr demo: installs what is missing, builds the plugin and gdprctl, starts two brokers
# on free loopback ports — a bare one and one with the plugin — lets a small simulated fleet publish
# the same messages to both, records and withdraws a driver's consent with gdprctl on the way,
# tightens a schema and declares a purpose and reloads both without a restart (a change of lawful
# basis is refused unless asked for), and shows what a subscriber receives from
# each broker; residency refuses EU data to a US client and a bridge until a reload of the
# residency file opens the transfer (asked for explicitly); then a simulated fleet of 20 vans holding one
# driver's data gets an erasure request (GDPR Art. 17), followed to its receipt — one van is
# offline for a while, one never answers, a dashboard received the data too; finally it audits the
# session recording offline: verify the hash chain, report, export a driver's data (GDPR Art. 15),
# show the erased driver's records unreadable, and catch a tampered row.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)

bash tools/install-deps.sh
cmake -S . -B build -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build build -j"$(nproc 2>/dev/null || echo 2)" --target mosquitto_gdpr gdprctl device-sim >/dev/null
gdprctl=$root/build/tools/gdprctl/gdprctl
device_sim=$root/build/examples/device-sim/device-sim

run=$root/examples/demo-run
rm -rf "$run"
mkdir -p "$run"
# The broker reads a copy of the example schemas: the demo edits one and reloads it.
cp -r "$root/schemas" "$run/schemas"
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; }
trap cleanup EXIT

free_port() {
  local p
  while :; do
    p=$(( 20000 + RANDOM % 30000 ))
    (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null || { echo "$p"; return; }
  done
}
wait_port() {
  for _ in $(seq 100); do (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0; sleep 0.05; done
  echo "broker on port $1 did not start; its log:" >&2; cat "$2" >&2; exit 1
}

head -c 32 /dev/urandom > "$run/pseudonym.key"
head -c 32 /dev/urandom > "$run/audit.key"
chmod 600 "$run/pseudonym.key" "$run/audit.key"
bare_port=$(free_port)
gdpr_port=$(free_port)
while [ "$gdpr_port" = "$bare_port" ]; do gdpr_port=$(free_port); done
us_port=$(free_port)
while [ "$us_port" = "$bare_port" ] || [ "$us_port" = "$gdpr_port" ]; do us_port=$(free_port); done
user=$(id -un)

# A US partner's broker (bare mosquitto). The plugin's broker bridges vehicle status and one
# house's smart-home topics to it.
cat > "$run/us.conf" <<CONF
listener $us_port 127.0.0.1
allow_anonymous true
user $user
log_dest file $run/us.log
CONF
# Residency rules: EU data may go to the EU and Switzerland only; clients whose id starts with us-
# sit in the US; the bridge's topics are read from the broker's own configuration.
cat > "$run/residency.json" <<JSON
{
  "regions": ["eu", "ch", "us"],
  "transfers": { "eu": ["ch"], "ch": ["eu"], "us": ["eu", "ch"] },
  "defaultRegion": "eu",
  "clients": [ { "clientId": "us-*", "region": "us" } ],
  "bridges": [ { "name": "to-us-partner", "region": "us" } ],
  "brokerConfig": "$run/gdpr.conf"
}
JSON

cat > "$run/bare.conf" <<CONF
listener $bare_port 127.0.0.1
allow_anonymous true
user $user
log_dest file $run/bare.log
CONF
cat > "$run/gdpr.conf" <<CONF
listener $gdpr_port 127.0.0.1
allow_anonymous true
user $user
log_dest file $run/gdpr.log
log_type error
log_type warning
log_type notice
log_type information

# The three lines an operator adds (see examples/mosquitto.conf):
plugin $root/build/plugin/mosquitto_gdpr.so
plugin_opt_schemas $run/schemas
plugin_opt_pseudonym_key_file $run/pseudonym.key
# This demo has no acl_file, so the plugin grants what it has no objection to:
plugin_opt_acl_default allow
# Consent records and device bindings, and who may manage them over \$CONTROL/gdpr/v1:
plugin_opt_database $run/gdpr.db
plugin_opt_operator_client_ids demo-operator
# Session recording: a hash-chained audit trail in the same database, personal data sealed per
# data subject under keys wrapped by this master key:
plugin_opt_audit_key_file $run/audit.key
# Erasure: commands go to gdpr/erase/<client id>; short times so that the demo ends quickly.
plugin_opt_erase_retry_seconds 1
plugin_opt_erase_deadline_seconds 10
# Residency (GDPR Chapter V): regions, transfers, client placement, bridges.
plugin_opt_residency_file $run/residency.json
# The controller's part of the record of processing activities (GDPR Art. 30(1)).
plugin_opt_processing_details_file $root/examples/processing-details.json

# A bridge to the US partner: Mosquitto shows bridge traffic to no plugin, so the plugin reads
# these lines and refuses, at publish time, resident personal data they would carry abroad.
connection to-us-partner
address 127.0.0.1:$us_port
remote_clientid eu-bridge
restart_timeout 1
topic fleet/+/vehicle/+/status out 1
topic home/h2/# out 1
CONF

mosquitto -c "$run/bare.conf" 2>>"$run/bare.stderr" & pids+=($!)
mosquitto -c "$run/us.conf" 2>>"$run/us.stderr" & pids+=($!)
wait_port "$us_port" "$run/us.log"
mosquitto -c "$run/gdpr.conf" 2>>"$run/gdpr.stderr" & pids+=($!)
gdpr_pid=$!
wait_port "$bare_port" "$run/bare.log"
wait_port "$gdpr_port" "$run/gdpr.log"

for target in bare gdpr; do
  port_var=${target}_port
  mosquitto_sub -h 127.0.0.1 -p "${!port_var}" -V 5 -t 'fleet/#' -t 'health/#' -t 'home/#' -t 'devices/#' \
    -F '%t  %p  %P' > "$run/$target.received" & pids+=($!)
done
sleep 0.5

ctl() {
  echo "  \$ gdprctl $*"
  "$gdprctl" --port "$gdpr_port" --client-id demo-operator "$@" | sed 's/^/    /'
}

echo
echo "=== The operator records driver D-1234's consent to route analytics (GDPR Art. 7):"
ctl consent set D-1234 route-analytics granted --evidence "fleet app consent screen, 2026-11-20"

# The simulated fleet: the same publishes go to both brokers.
publish() {  # topic payload [client-id]
  for port in "$bare_port" "$gdpr_port"; do
    mosquitto_pub -h 127.0.0.1 -p "$port" -V 5 -q 1 -i "${3:-demo-device}" -t "$1" -m "$2" 2>>"$run/publish-errors.$port" || true
  done
}
publish fleet/acme/vehicle/v17/telemetry \
  '{"driver_id":"D-1234","driver_name":"Ann Example","phone":"+49 170 1234567","gps":{"lat":48.137154,"lon":11.576124},"speed":52.5,"fuel":0.61,"odometer":128440,"ts":"2026-11-23T16:41:55.250Z","vin":"WVW-123"}' vehicle-v17
publish fleet/acme/vehicle/v18/telemetry \
  '{"driver_id":"D-5678","gps":{"lat":52.520008,"lon":13.404954},"speed":0,"ts":"2026-11-23T16:42:03Z"}' vehicle-v18
publish fleet/acme/vehicle/v17/telemetry \
  '{"driver_id":"D-1234","gps":{"lat":48.139001,"lon":11.580212},"speed":49.0,"ts":"2026-11-23T16:42:55.250Z"}' vehicle-v17
publish health/wearable/u-77/vitals \
  '{"user_email":"ann@example.org","hr":71,"spo2":98,"ts":1795452459123,"battery":80,"device_serial":"SN-0042"}' wearable-u77
publish home/h1/presence/kitchen \
  '{"occupant":"Ann","occupied":true,"room":"kitchen","ts":1795452459,"camera_snapshot":"iVBORw0KGgo..."}' presence-h1
publish devices/gw-9/diagnostics \
  '{"device_serial":"GW-9","ip_address":"192.168.1.20","wifi_ssid":"AnnsHome","firmware":"2.4.1","temperature_c":41.37}' gw-9
publish fleet/acme/vehicle/v19/telemetry 'driver D-9999 at 48.1,11.5 (not JSON)' vehicle-v19
# The vehicle's last state, retained on the plugin's broker while the consent stands.
mosquitto_pub -h 127.0.0.1 -p "$gdpr_port" -V 5 -q 1 -i vehicle-v17 -r -t fleet/acme/vehicle/v17/telemetry \
  -m '{"driver_id":"D-1234","gps":{"lat":48.139500,"lon":11.581000},"speed":0,"ts":"2026-11-23T16:43:01Z"}'
sleep 0.3

echo
echo "=== D-1234 withdraws consent; the very next message from the vehicle loses its position:"
ctl consent set D-1234 route-analytics withdrawn --evidence "driver request via app, 2026-11-23"
publish fleet/acme/vehicle/v17/telemetry \
  '{"driver_id":"D-1234","gps":{"lat":48.140112,"lon":11.590017},"speed":31.0,"ts":"2026-11-23T16:43:55.250Z"}' vehicle-v17
sleep 1
echo
echo "=== A dashboard that subscribes only now gets the vehicle's retained message, stored while the"
echo "    consent stood, without the position (GDPR Art. 7(3): withdrawal reaches stored messages too):"
mosquitto_sub -h 127.0.0.1 -p "$gdpr_port" -V 5 -i late-dashboard -t fleet/acme/vehicle/v17/telemetry -C 1 -W 5 \
  -F '    %t  %p' || echo "    (nothing received)"
echo
echo "=== The consent history an auditor can ask for:"
ctl consent get D-1234

# The vehicle parks and retains its state: version 3 masks the phone number in the stored message.
mosquitto_pub -h 127.0.0.1 -p "$gdpr_port" -V 5 -q 1 -i vehicle-v17 -r -t fleet/acme/vehicle/v17/telemetry \
  -m '{"driver_id":"D-1234","phone":"+49 170 1234567","speed":0,"ts":"2026-11-23T16:44:30Z"}'
sleep 0.3

echo
echo "=== The data protection officer decides that drivers' phone numbers must not reach subscribers at"
echo "    all: vehicle-telemetry becomes version 4 (phone dropped, no longer masked), and declares a new"
echo "    purpose resting on consent in purposes.json; the operator reloads both without restarting the"
echo "    broker (consent given stays with its purpose); the vehicle's next message follows them:"
python3 - "$run/schemas/vehicle-telemetry.json" "$run/schemas/purposes.json" <<'PY'
import json, sys
path = sys.argv[1]
schema = json.load(open(path))
schema["version"] = 4
schema["fields"]["/phone"] = {k: v for k, v in schema["fields"]["/phone"].items() if k != "mask"} | {"action": "drop"}
json.dump(schema, open(path, "w"), indent=2)
purposes = json.load(open(sys.argv[2]))
purposes["purposes"]["eco-driving-coaching"] = {
    "lawfulBasis": "consent", "description": "Coaching the driver on fuel-saving driving, for drivers who opt in."}
json.dump(purposes, open(sys.argv[2], "w"), indent=2)
PY
ctl schemas reload
publish fleet/acme/vehicle/v17/telemetry \
  '{"driver_id":"D-1234","phone":"+49 170 1234567","speed":28.5,"ts":"2026-11-23T16:44:55.250Z"}' vehicle-v17
sleep 0.5
echo
echo "=== The message the broker retained under version 3 (phone masked) follows version 4 too: a"
echo "    dashboard that subscribes now gets it without the phone (GDPR Art. 5(1)(c)):"
mosquitto_sub -h 127.0.0.1 -p "$gdpr_port" -V 5 -i later-dashboard -t fleet/acme/vehicle/v17/telemetry -C 1 -W 5 \
  -F '    %t  %p  %P' || echo "    (nothing received)"

echo
echo "=== An edit of purposes.json would move route analytics off consent, so drivers' positions would"
echo "    reach subscribers without it: the reload refuses that unless asked for (a SIGHUP never asks):"
cp "$run/schemas/purposes.json" "$run/purposes.json.kept"
python3 - "$run/schemas/purposes.json" <<'PY'
import json, sys
doc = json.load(open(sys.argv[1]))
doc["purposes"]["route-analytics"]["lawfulBasis"] = "legitimate_interests"
json.dump(doc, open(sys.argv[1], "w"), indent=2)
PY
ctl schemas reload 2>&1 || true
mv "$run/purposes.json.kept" "$run/schemas/purposes.json"

show() {
  echo
  echo "=== $1"
  sed 's/^/  /' "$2"
}
show "What a subscriber receives from a BARE broker:" "$run/bare.received"
show "What a subscriber receives from the broker WITH mosquitto-gdpr:" "$run/gdpr.received"
echo
echo "=== What the publisher of the malformed message was told:"
bare_answer=$(tr -d '\n' < "$run/publish-errors.$bare_port" 2>/dev/null || true)
gdpr_answer=$(tr -d '\n' < "$run/publish-errors.$gdpr_port" 2>/dev/null || true)
echo "  bare broker: ${bare_answer:-accepted (PUBACK, success)}"
echo "  with plugin: ${gdpr_answer:-accepted (PUBACK, success)}   (MQTT v5 reason code 135)"
echo
echo "=== Counters (gdprctl stats):"
ctl stats
echo
echo "=== The plugin's log lines (topics, schema ids and counts; never field values):"
grep 'gdpr:' "$run/gdpr.log" | sed 's/^[0-9]*: /  /'

echo
echo "=== Residency (GDPR Chapter V). The plugin's broker is in the EU and bridges to a US partner's"
echo "    broker: vehicle status (no personal data) and house h2's smart-home topics. A US client,"
echo "    us-dashboard, also subscribes on the EU broker. At start-up the plugin warned:"
grep 'gdpr: residency' "$run/gdpr.log" | sed 's/^[0-9]*: /  /'
for _ in $(seq 100); do grep -q 'as eu-bridge' "$run/us.log" && break; sleep 0.1; done
mosquitto_sub -h 127.0.0.1 -p "$us_port" -V 5 -t '#' -F '%t  %p' > "$run/us-partner.received" & pids+=($!)
mosquitto_sub -h 127.0.0.1 -p "$gdpr_port" -V 5 -i us-dashboard -t 'fleet/#' -t 'home/#' -F '%t  %p' \
  > "$run/us-dashboard.received" & pids+=($!)
sleep 0.5
: > "$run/residency-publish.txt"
eu_publish() {  # topic payload client-id
  local answer
  answer=$(mosquitto_pub -h 127.0.0.1 -p "$gdpr_port" -V 5 -q 1 -i "$3" -t "$1" -m "$2" 2>&1 || true)
  case "$answer" in
    *"Not authorized"*) echo "$1: refused, MQTT v5 reason code 135 (\"$answer\")" ;;
    *) echo "$1: accepted (PUBACK, success)" ;;
  esac >> "$run/residency-publish.txt"
}
eu_publish fleet/acme/vehicle/v17/status '{"battery_v":12.6,"fuel":0.58,"doors_locked":true,"fault_codes":[]}' vehicle-v17
eu_publish fleet/acme/vehicle/v17/telemetry \
  '{"driver_id":"D-1234","gps":{"lat":48.141,"lon":11.592},"speed":28.0,"ts":"2026-11-23T16:44:55Z"}' vehicle-v17
eu_publish home/h2/presence/hall '{"occupant":"Bob","occupied":true,"room":"hall"}' presence-h2
sleep 1
echo
echo "=== What the publishers were told:"
sed 's/^/  /' "$run/residency-publish.txt"
show "What the US partner's broker received over the bridge (no personal data):" "$run/us-partner.received"
show "What us-dashboard received from the EU broker (only data that holds nothing personal):" "$run/us-dashboard.received"
echo
echo "=== What the EU dashboard received of the same publishes (everything allowed):"
grep -E 'v17/status|16:44|home/h2' "$run/gdpr.received" | sed 's/^/  /'
echo
echo "=== Residency refusals per region pair (gdprctl stats), and the plugin's log lines:"
"$gdprctl" --port "$gdpr_port" --client-id demo-operator stats | sed -n '/residency refusals/,/subjects with/p' | sed '$d' | sed 's/^/  /'
grep -E 'gdpr: refused publish on .home/h2' "$run/gdpr.log" | sed 's/^[0-9]*: /  /'

echo
echo "=== The company signs standard contractual clauses with the US partner (GDPR Art. 46) and the data"
echo "    protection officer adds eu -> us to the residency file's transfers. The rules reload without a"
echo "    restart, but a reload that opens a transfer must ask for it (a SIGHUP never does):"
python3 - "$run/residency.json" <<'PY'
import json, sys
doc = json.load(open(sys.argv[1]))
doc["transfers"]["eu"].append("us")
json.dump(doc, open(sys.argv[1], "w"), indent=2)
PY
ctl schemas reload 2>&1 || true
ctl schemas reload --allow-transfer-changes
before=$(wc -l < "$run/us-dashboard.received")
eu_publish fleet/acme/vehicle/v17/telemetry \
  '{"driver_id":"D-1234","gps":{"lat":48.142,"lon":11.593},"speed":31.0,"ts":"2026-11-23T16:45:55Z"}' vehicle-v17
sleep 1
echo
echo "=== What us-dashboard received of that telemetry publish, now that EU data may go to the US:"
tail -n +$((before + 1)) "$run/us-dashboard.received" | sed 's/^/  /'
echo
echo "=== The clauses are suspended again: closing a transfer tightens, so a plain reload does it:"
python3 - "$run/residency.json" <<'PY'
import json, sys
doc = json.load(open(sys.argv[1]))
doc["transfers"]["eu"].remove("us")
json.dump(doc, open(sys.argv[1], "w"), indent=2)
PY
ctl schemas reload

echo
echo "=== The record of processing activities (GDPR Art. 30) the data protection officer keeps, as the"
echo "    broker enforces it now (gdprctl processing-record; here the vehicle telemetry and what to review):"
echo "  \$ gdprctl processing-record"
"$gdprctl" --port "$gdpr_port" --client-id demo-operator processing-record > "$run/processing-record.txt"
sed -n '/^Controller/,/^$/p' "$run/processing-record.txt" | sed 's/^/  /'
sed -E -n '/^  vehicle-telemetry@/,/^(  [a-z]|$)/p' "$run/processing-record.txt" | sed '$d' | sed 's/^/  /'
sed -n '/^For review/,$p' "$run/processing-record.txt" | sed 's/^/    /'

echo
echo "=== Erasure (GDPR Art. 17): 20 vans of fleet 'acme', all driven by D-4242, publish telemetry; a"
echo "    dashboard subscribes to it. van-3 then goes offline for 3 s; van-5 will never answer; and this"
echo "    demo's own mosquitto_sub received the data too, but cannot answer an erase command."
"$device_sim" --port "$gdpr_port" --devices 20 --fleet acme --messages 2 --interval-ms 100 \
  --shared-subject D-4242 --subscriber dispatch-dashboard --never-ack van-5 --offline van-3 --offline-ms 3000 \
  --duration-s 25 > "$run/fleet.log" 2>&1 & pids+=($!)
for _ in $(seq 100); do
  [ "$(grep -c '^published' "$run/fleet.log" 2>/dev/null)" -ge 20 ] && grep -q '^offline van-3' "$run/fleet.log" && break
  sleep 0.1
done
sleep 0.3
echo "  $(grep -c '^published' "$run/fleet.log") vans published; $(grep '^offline' "$run/fleet.log")"
echo
echo "=== The operator asks once; the plugin tells every holder and follows them to a receipt:"
echo "  \$ gdprctl erase --subject D-4242 --id demo-erasure-1"
"$gdprctl" --port "$gdpr_port" --client-id demo-operator erase --subject D-4242 --id demo-erasure-1 --wait 30 2>&1 \
  | sed 's/^/    /' | awk 'NR <= 14 || /van-3 |van-5 |dashboard/' || true
echo
echo "=== What the fleet saw (device-sim): commands, retries to van-5, van-3 answering once back:"
grep -E '^(erase|ack|online|offline) (van-3|van-5|dispatch-dashboard)' "$run/fleet.log" | sed 's/^/  /'
echo
echo "=== The erasure register:"
ctl erasure list
echo
echo "=== The alerts an operator's monitoring would get (\$CONTROL/gdpr/v1/alerts) are in the log too:"
grep 'gdpr:.*erasure request' "$run/gdpr.log" | sed 's/^[0-9]*: /  /'

echo
echo "=== D-1234 asks what the fleet holds about them (GDPR Art. 15): an operator exports it online:"
echo "  \$ gdprctl --json subject export D-1234"
(umask 077; "$gdprctl" --port "$gdpr_port" --client-id demo-operator --json subject export D-1234 > "$run/online-export-D-1234.json")
python3 - "$run/online-export-D-1234.json" <<'PY'
import json, sys
d = json.load(open(sys.argv[1]))["data"]
print(f"    {len(d['records'])} records, consent now: {d['consent']['granted'] or 'none'}, "
      f"recipients: {', '.join(sorted(d['recipients'])) or 'none'}")
h = d.get("holders", {})
print(f"    data map: published by {', '.join(x['client_id'] for x in h.get('publishers', [])) or 'none'}; "
      f"received by {', '.join(x['client_id'] for x in h.get('recipients', [])) or 'none'} "
      f"(retained copies included); retained on {', '.join(x['topic'] for x in h.get('retained_topics', [])) or 'none'}")
kinds = {}
for r in d["records"]:
    kinds[r["kind"]] = kinds.get(r["kind"], 0) + 1
print("    by kind: " + ", ".join(f"{k} {n}" for k, n in sorted(kinds.items())))
for r in [r for r in d["records"] if r["kind"] == "publish"][:1]:
    print(f"    seq {r['seq']} publish ({r.get('schema', '')}), as forwarded: {json.dumps(r['data']['payload'])[:100]}")
PY

# Stop the plugin's broker: the audit writer commits what is queued, then the files are audited.
kill "$gdpr_pid"; wait "$gdpr_pid" 2>/dev/null || true
echo
echo "=== Audit trail: gdprctl verify (hash chain and sequence, offline; with the key file, also the anchor's statement):"
"$gdprctl" verify "$run/gdpr.db" --key-file "$run/audit.key" | sed 's/^/  /'
echo
echo "=== Audit trail: gdprctl report (records per day, kind, schema, refusal reason, data category):"
"$gdprctl" report "$run/gdpr.db" | sed 's/^/  /'
echo
echo "=== D-1234's export (GDPR Art. 15/20), decrypted with the audit key; first records:"
"$gdprctl" export "$run/gdpr.db" --subject D-1234 --key-file "$run/audit.key" --output "$run/export-D-1234.json"
python3 - "$run/export-D-1234.json" <<'PY'
import json, sys
doc = json.load(open(sys.argv[1]))
print(f"  {len(doc['records'])} records, recipients: {', '.join(sorted(doc['recipients'])) or '-'}, "
      f"consent changes: {len(doc.get('consent_history', []))}")
for r in doc["records"][:4]:
    print(f"  seq {r['seq']} {r['kind']} from {r['client_id']}: {json.dumps(r['data'])[:110]}")
PY
echo "  (whole document: $run/export-D-1234.json, mode 0600)"
echo
echo "=== D-4242's export after the erasure: the data key is shredded, the records unreadable:"
"$gdprctl" export "$run/gdpr.db" --subject D-4242 --key-file "$run/audit.key" --output "$run/export-D-4242.json"
python3 - "$run/export-D-4242.json" <<'PY'
import json, sys
doc = json.load(open(sys.argv[1]))
print(f"  data key: {doc['data_key']}; readable records: {len(doc['records'])}, "
      f"unreadable: {doc['unreadable_records']}, consent changes: {len(doc.get('consent_history', []))}")
PY
echo
echo "=== Someone edits a delivery record in a copy of the database; verify notices:"
cp "$run/gdpr.db" "$run/tampered.db"
python3 -c "import sqlite3,sys; c=sqlite3.connect(sys.argv[1]); c.execute(\"UPDATE audit_records SET client_id='nobody' WHERE seq=(SELECT min(seq) FROM audit_records WHERE kind='delivery')\"); c.commit()" "$run/tampered.db"
"$gdprctl" verify "$run/tampered.db" | sed 's/^/  /' || echo "  (gdprctl verify exit status $?)"
echo
echo "Files of this run (configs, logs, keys, database) are in $run"
echo
