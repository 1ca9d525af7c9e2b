# Sourced by scripts/demo.sh --active-active (Garage is up on $GPORT with the objects written):
# two tollgate instances, the seed's burst scenario spread over both, first without [cluster]
# (2x), then with [cluster] on a Redis of its own (1x), and a table of both. Stops what it
# started by PID (demo.sh's cleanup stops the rest on failure).

AA_SCENARIO="bench/scenarios/active-active.toml"
REDIS_PORT="$(free_port)"
say "starting Redis on 127.0.0.1:$REDIS_PORT (its own directory, no persistence)"
bash scripts/redis.sh start "$WORK/redis" "$REDIS_PORT"

# demo.toml with an absolute keys file, alone and with [cluster].
sed "s|^keys_file = \"demo-keys.toml\"|keys_file = \"$ROOT/config/demo-keys.toml\"|" \
  config/demo.toml >"$WORK/alone.toml"
cp "$WORK/alone.toml" "$WORK/cluster.toml"
cat >>"$WORK/cluster.toml" <<TOML

[cluster]
redis_url = "redis://127.0.0.1:$REDIS_PORT"
sync_interval = "100ms"
TOML

# aa_round NAME CONFIG: two instances of CONFIG, the scenario over both, report NAME.json.
aa_round() {
  local name="$1" cfg="$2" a b
  say "round '$name': two tollgate instances ($cfg)"
  start_tollgate "$name-a" "$cfg"; a="$T_PORT"; AA_ADMIN_A="$A_PORT"
  start_tollgate "$name-b" "$cfg"; b="$T_PORT"; AA_ADMIN_B="$A_PORT"
  say "loadgen run $AA_SCENARIO --scale $SCALE over 127.0.0.1:$a and 127.0.0.1:$b (round robin)"
  set +e
  "$LOADGEN" run "$AA_SCENARIO" --scale "$SCALE" \
    --target "http://127.0.0.1:$a" --target "http://127.0.0.1:$b" \
    --json "$WORK/$name.json" --html "$WORK/$name.html"
  AA_RC=$?
  set -e
  if [ "$name" = cluster ]; then
    say "the instances' cluster state (admin API /stats)"
    for adm in "$AA_ADMIN_A" "$AA_ADMIN_B"; do
      curl -fsS -m 5 "http://127.0.0.1:$adm/stats" | python3 -c '
import json, sys
c = json.load(sys.stdin)["cluster"]
lat, batch = c["sync_latency_us"], c["batch"]
print("  %s: mode %s, %s alive, %s ticks, %s failed, sync latency mean %s us max %s us, last call %s keys"
      % (c["instance_id"], c["mode"], c["instances_alive"], c["ticks"], c["failures"],
         lat["mean"], lat["max"], batch["keys"]))' || echo "  (admin API did not answer)"
    done
  fi
  stop_tollgates
}

aa_round alone "$WORK/alone.toml"
RC_ALONE=$AA_RC
aa_round cluster "$WORK/cluster.toml"
RC_CLUSTER=$AA_RC

say "most admitted per key in any trailing window, over both instances (limit 50/s, 1000/min)"
python3 - "$WORK/alone.json" "$WORK/cluster.json" <<'PY'
import json, sys
def load(p):
    r = json.load(open(p))
    out = {}
    for a in r["accuracy"]:
        out[a["identity"]] = {round(w["window_ms"]): (w["max_certain"], w["limit"]) for w in a["windows"]}
    return out
alone, cluster = load(sys.argv[1]), load(sys.argv[2])
print(f"  {'key':<28} {'1 s alone':>10} {'1 s cluster':>12} {'60 s alone':>11} {'60 s cluster':>13}")
for k in sorted(alone):
    a, c = alone[k], cluster.get(k, {})
    def cell(d, w):
        m, l = d.get(w, (0, 1))
        return f"{m} ({m / l:.2f}x)"
    print(f"  {k:<28} {cell(a, 1000):>10} {cell(c, 1000):>12} {cell(a, 60000):>11} {cell(c, 60000):>13}")
PY
case $RC_CLUSTER in
  0) say "active-active demo finished: one limit per key across both instances with [cluster]" ;;
  *) say "active-active demo: loadgen exit status $RC_CLUSTER for the cluster round (see above)" ;;
esac
[ "$RC_ALONE" -le 1 ] || say "the round without [cluster] ended with loadgen status $RC_ALONE"
return "$RC_CLUSTER"
