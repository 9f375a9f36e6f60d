#!/bin/sh
# Guest side of scripts/systemd-boot-test.sh, run by livenessd-boot-test.service from the host's share
# (/boot-test, 9p) once the guest's systemd is up. Each check writes "@@PASS what" or "@@FAIL what" to
# /boot-test/results.log, which the host reads; the service powers the VM off when this script ends.
set -u
S=/boot-test
R=$S/results.log
SOCK=/run/livenessd/livenessd.sock
CONF=/etc/livenessd/livenessd.yaml
: > "$R"

up() { cut -d' ' -f1 /proc/uptime; }
since() { awk -v a="$1" -v b="$(up)" 'BEGIN { printf "%.1f", b - a }'; }
note() { echo "@@$*" >> "$R"; echo "boot-test: $*"; }
pass() { note "PASS $*"; }
fail() { note "FAIL $*"; }
info() { note "INFO $*"; }
# check "what" command…: PASS or FAIL by the command's status
check() { what=$1; shift; if "$@"; then pass "$what"; return 0; else fail "$what"; return 1; fi; }
# wait_for SECONDS command…: polls until the command succeeds or SECONDS (of uptime) have passed
now() { read -r u _ < /proc/uptime; echo "${u%.*}"; }
wait_for() { end=$(($(now) + $1)); shift; while :; do "$@" && return 0; [ "$(now)" -ge $end ] && return 1; sleep 0.3; done; }
prop() { systemctl show -p "$1" --value livenessd.service; }
# ActiveState/SubState from one snapshot (two calls could straddle a change: "activating/running")
state() { systemctl show -p ActiveState -p SubState livenessd.service | sort | sed 's/^[^=]*=//' | paste -sd/; }
is_state() { [ "$(state)" = "$1" ]; }
restarted_past() { [ "$(prop NRestarts)" -gt "$1" ] 2>/dev/null; }
new_main_pid() { p=$(prop MainPID); [ "$p" != 0 ] && [ "$p" != "$1" ]; }
# a decision from the test's camera (the daemon's JSON has its keys sorted: source before type)
has_decision() { grep -q '"source":"door".*"type":"decision"' "$1"; }
decisions_after() { tail -n +"$(($2 + 1))" "$1" | grep -q '"source":"door".*"type":"decision"'; }
finish() {
    journalctl -b --no-pager -o short-monotonic > $S/journal.txt 2>&1
    systemctl status --no-pager -l livenessd.socket livenessd.service > $S/units.txt 2>&1
    systemd-analyze blame --no-pager > $S/blame.txt 2>&1
    cp /tmp/*.log /tmp/*.json /tmp/*.err $S/ 2>/dev/null
    note "DONE at uptime $(up)s"
    # Power off now: the results are on the host already (9p writes are synchronous) and the disk is a
    # throw-away overlay. (The unit's SuccessAction=poweroff-force is the fallback.)
    sync
    echo o > /proc/sysrq-trigger
    exit 0
}

# --- boot -------------------------------------------------------------------------------------------
state=$(timeout 120 systemctl is-system-running --wait 2>&1)
info "booted: system $state; $(systemd-analyze time 2>/dev/null | head -1)"
[ "$state" = running ] || systemctl --failed --no-pager | sed 's/^/boot-test:   /'
check "the vivid camera appeared (/dev/video0, group video, via systemd-modules-load + udev)" \
    wait_for 30 sh -c '[ -c /dev/video0 ] && [ "$(stat -c %G /dev/video0)" = video ]'

# --- install ----------------------------------------------------------------------------------------
t=$(up)
if [ -f $S/livenessd.deb ]; then
    dpkg -i $S/livenessd.deb > /tmp/dpkg.log 2>&1
    rc=$?
    check "the .deb installs (dpkg -i: exit $rc, $(since "$t") s)" [ $rc = 0 ] || { sed 's/^/boot-test:   /' /tmp/dpkg.log; finish; }
else
    cp -a $S/standin/. / &&
        { getent group livenessd >/dev/null || groupadd --system livenessd; } &&
        { id livenessd >/dev/null 2>&1 || useradd --system --gid livenessd --groups video --no-create-home \
            --home-dir /nonexistent --shell /usr/sbin/nologin livenessd; } &&
        systemctl daemon-reload && systemctl enable --now livenessd.socket 2>/dev/null
    rc=$?
    check "the stand-in installs (scripts/install.sh's layout with PREFIX=/usr; no .deb given): exit $rc" [ $rc = 0 ] || finish
fi
info "$(livenessd --version 2>/dev/null | head -1); user: $(id livenessd 2>&1)"
check "livenessd.socket is enabled" [ "$(systemctl is-enabled livenessd.socket 2>&1)" = enabled ]
check "livenessd.socket is active and $SOCK is a socket ($(stat -c '%A %U:%G' $SOCK 2>&1))" \
    sh -c "systemctl is-active -q livenessd.socket && [ -S $SOCK ]"
check "livenessd.service is not running before any client ($(state))" is_state inactive/dead

# The test's configuration: the vivid webcam at 320x180, 5 fps; the MiniFASNet pair behind the YuNet
# detector. Under TCG a model pass takes seconds; vivid's test pattern has no face, so the decisions
# are `no_face` ones after detection alone (a few hundred ms a frame here), well inside WatchdogSec=10.
cat > $CONF <<'YAML'
models: [minifasnet]
crop:
  mode: detect
cameras:
  - name: door
    device: /dev/video0
    size: 320x180
    fps: 5
    format: yuyv
YAML
cp $CONF /tmp/good.yaml
livenessd config check $CONF > /tmp/config-check.log 2>&1 || { fail "livenessd config check rejects the test config"; cat /tmp/config-check.log; }

# --- socket activation and READY=1 -------------------------------------------------------------------
: > /tmp/states.log
( while :; do echo "$(up) $(state)" >> /tmp/states.log; sleep 0.5; done ) &
poller=$!
t=$(up)
timeout 240 livenessd watch --status --socket $SOCK > /tmp/status1.json 2> /tmp/status1.err
rc=$?
check "the first client connection starts livenessd.service (socket activation): watch --status answered in $(since "$t") s (exit $rc)" \
    sh -c "[ $rc = 0 ] && grep -q '\"type\":\"status\"' /tmp/status1.json" || cat /tmp/status1.err
check "livenessd.service was triggered by livenessd.socket (TriggeredBy=$(prop TriggeredBy))" \
    sh -c "systemctl show -p TriggeredBy --value livenessd.service | grep -qw livenessd.socket"
wait_for 240 is_state active/running
kill $poller
echo "$(up) $(state)" >> /tmp/states.log
check "livenessd.service active/running after $(since "$t") s" is_state active/running || finish
check "… and 'activating (start)' until then (Type=notify): states seen $(awk '{print $2}' /tmp/states.log | uniq | tr '\n' ' ')" \
    sh -c "awk '{print \$2}' /tmp/states.log | uniq | tr '\n' ' ' | grep -q 'activating/start active/running'"
check "READY=1 sent by the daemon: journal has its 'ready: …first frame decided' line; STATUS=$(prop StatusText)" \
    sh -c "journalctl -u livenessd.service -b --no-pager | grep -q 'ready: model loaded, socket bound, first frame decided'"
info "watchdog: WatchdogUSec=$(prop WatchdogUSec) NotifyAccess=$(prop NotifyAccess) MainPID=$(prop MainPID)"

# --- decisions flow -----------------------------------------------------------------------------------
livenessd watch --socket $SOCK > /tmp/events.log 2> /tmp/watch.err &
watcher=$!
t=$(up)
wait_for 60 has_decision /tmp/events.log
r=$?
check "decisions flow from the vivid camera (the first $(since "$t") s after subscribing)" [ $r = 0 ]
info "first decision: $(grep -m1 '"type":"decision"' /tmp/events.log | cut -c1-300)"

# --- the watchdog -------------------------------------------------------------------------------------
pid1=$(prop MainPID); nr1=$(prop NRestarts); ino=$(stat -c %i $SOCK)
t=$(up)
kill -STOP "$pid1"
info "SIGSTOP sent to MainPID $pid1 (NRestarts=$nr1)"
wait_for 60 restarted_past "$nr1"
check "the watchdog killed the stopped daemon and systemd restarted it: NRestarts $nr1 -> $(prop NRestarts) after $(since "$t") s" \
    restarted_past "$nr1"
check "the journal says why: '$(journalctl -u livenessd.service -b --no-pager | grep -m1 -o 'Watchdog timeout.*')'" \
    sh -c "journalctl -u livenessd.service -b --no-pager | grep -q 'Watchdog timeout'"
n=$(wc -l < /tmp/events.log)
wait_for 240 is_state active/running
check "the restarted daemon is active/running with a new MainPID ($pid1 -> $(prop MainPID)) $(since "$t") s after SIGSTOP" \
    sh -c "[ \"\$(systemctl show -p MainPID --value livenessd.service)\" != $pid1 ] && [ \"\$(systemctl show -p ActiveState --value livenessd.service)\" = active ]"
wait_for 90 decisions_after /tmp/events.log "$n"
r=$?
check "frames come back: the same client (it reconnects) gets decisions again, $(since "$t") s after SIGSTOP" [ $r = 0 ]
check "the socket file outlived the watchdog restart (inode $ino -> $(stat -c %i $SOCK 2>&1))" \
    sh -c "[ -S $SOCK ] && [ \"\$(stat -c %i $SOCK)\" = $ino ]"
timeout 60 livenessd watch --status --socket $SOCK > /tmp/status-wd.json 2> /tmp/status-wd.err
rc=$?
check "a new client connects after the watchdog restart (watch --status: exit $rc)" \
    sh -c "[ $rc = 0 ] && grep -q '\"type\":\"status\"' /tmp/status-wd.json"

# --- systemctl restart keeps the socket --------------------------------------------------------------
ino=$(stat -c %i $SOCK); pid2=$(prop MainPID)
t=$(up)
systemctl restart livenessd.service
rc=$?
check "systemctl restart livenessd: exit $rc after $(since "$t") s (returns once READY=1)" [ $rc = 0 ]
check "the socket file is still there and the same one (inode $ino -> $(stat -c %i $SOCK 2>&1))" \
    sh -c "[ -S $SOCK ] && [ \"\$(stat -c %i $SOCK)\" = $ino ]"
check "livenessd.socket still active, service active/running with a new MainPID ($pid2 -> $(prop MainPID))" \
    sh -c "systemctl is-active -q livenessd.socket && [ \"\$(systemctl show -p MainPID --value livenessd.service)\" != $pid2 ]"
timeout 60 livenessd watch --status --socket $SOCK > /tmp/status2.json 2> /tmp/status2.err
rc=$?
check "a new client connects after the restart (watch --status: exit $rc)" \
    sh -c "[ $rc = 0 ] && grep -q '\"type\":\"status\"' /tmp/status2.json"
timeout 90 livenessd watch --socket $SOCK > /tmp/events2.log 2> /tmp/watch2.err &
t=$(up)
wait_for 60 has_decision /tmp/events2.log
r=$?
check "… and gets decisions ($(since "$t") s after subscribing)" [ $r = 0 ]
kill $! $watcher 2>/dev/null

# --- systemctl reload: SIGHUP re-reads the settings in place ------------------------------------------
pid3=$(prop MainPID)
systemctl reload livenessd.service
rc=$?
wait_for 20 sh -c "journalctl -u livenessd.service -b --no-pager | grep -q 'livenessd\[$pid3\]: .*configuration reloaded'"
r=$?
check "systemctl reload livenessd (SIGHUP): exit $rc, the daemon says 'configuration reloaded', same MainPID ($pid3 -> $(prop MainPID)), still active/running" \
    sh -c "[ $rc = 0 ] && [ $r = 0 ] && [ \"\$(systemctl show -p MainPID --value livenessd.service)\" = $pid3 ] && [ \"\$(systemctl show -p SubState --value livenessd.service)\" = running ]"

# Nothing so far was an error for the daemon: only systemd's own words about the watchdog kill.
journalctl -p err -b -u livenessd.service -u livenessd.socket --no-pager -o cat > /tmp/errors-before.log 2>&1
check "no error-priority journal line about livenessd so far except the watchdog's ($(grep -vc 'Watchdog timeout\|Killing process.*SIGABRT\|^-- ' /tmp/errors-before.log) other)" \
    sh -c "! grep -v 'Watchdog timeout\|Killing process.*SIGABRT\|^-- ' /tmp/errors-before.log | grep -q ."
grep -v 'Watchdog timeout\|Killing process.*SIGABRT\|^-- ' /tmp/errors-before.log | head -5 | sed 's/^/boot-test:   err: /'

# --- a fatal configuration error -----------------------------------------------------------------------
printf 'treshold: 0.5\n' >> $CONF
t=$(up)
systemctl restart livenessd.service > /tmp/restart-bad.log 2>&1
rc=$?
check "with an unknown key in the config, systemctl restart livenessd fails (exit $rc, $(since "$t") s)" [ $rc != 0 ]
sleep 3
journalctl -p err -u livenessd.service -b --no-pager -o cat > /tmp/journal-err.log 2>&1
check "journalctl -p err -u livenessd shows the daemon's error: '$(grep -m1 "treshold" /tmp/journal-err.log | cut -c1-240)'" \
    grep -q "unknown key 'treshold'" /tmp/journal-err.log
restarts=$(prop NRestarts)
sleep 5
check "a fatal start-up error is not restarted in a loop (RestartPreventExitStatus=2): $(state), Result=$(prop Result), NRestarts $restarts -> $(prop NRestarts) after 5 s more" \
    sh -c "[ \"\$(systemctl show -p ActiveState --value livenessd.service)\" = failed ] && [ \"\$(systemctl show -p NRestarts --value livenessd.service)\" = $restarts ]"

# --- the operator fixes the config: the next client starts the service again ----------------------------
cp /tmp/good.yaml $CONF
systemctl stop livenessd.service
systemctl reset-failed livenessd.service livenessd.socket 2>/dev/null
systemctl start livenessd.socket
t=$(up)
timeout 120 livenessd watch --status --socket $SOCK > /tmp/status3.json 2> /tmp/status3.err
rc=$?
wait_for 60 is_state active/running
check "with the config fixed, the next client starts it again through the socket ($(since "$t") s, watch --status exit $rc)" \
    sh -c "[ $rc = 0 ] && grep -q '\"type\":\"status\"' /tmp/status3.json && systemctl is-active -q livenessd.service"

finish
