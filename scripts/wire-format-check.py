#!/usr/bin/env python3
"""Verify annals event records against docs/wire-format.md (wire format version 1).

This checker is written from the spec alone, as a client in another language would be:
it decodes the headers, recomputes every event's hash from the canonical encoding,
verifies each aggregate's chain and checks murmur2 placement.

Input: a JSON dump of event records, either a list or {"records": [...]}. Each record:

    {
      "topic": "annals.account.events",
      "partition": 1,
      "offset": 0,
      "key": "acc-1",                      # UTF-8 text of the record key (null = no key)
      "headers": {"annals-wire-version": "1", ...},   # or [["name", "value"], ...]
      "value": "eyJvd25lciI6...",          # base64 of the record value (null = no value)
      "timestamp": 1718000000123           # optional: record timestamp, ms since epoch
    }

Usage:

    python3 scripts/wire-format-check.py DUMP.json --partitions N [--from-middle]

Exit status: 0 when every check passes, 1 when any record fails (each failure is printed
on stderr, naming the record as topic/partition@offset), 2 when the dump cannot be read.
Python 3 standard library only.
"""

import argparse
import base64
import binascii
import datetime
import hashlib
import json
import re
import struct
import sys

WIRE_VERSION = "1"
HASH_DOMAIN = "annals-event-v1"
ZERO_HASH = bytes(32)
MAX_AGGREGATE_ID_BYTES = 1024

H_WIRE_VERSION = "annals-wire-version"
H_EVENT_ID = "annals-event-id"
H_EVENT_TYPE = "annals-event-type"
H_SCHEMA_VERSION = "annals-schema-version"
H_AGGREGATE_TYPE = "annals-aggregate-type"
H_AGGREGATE_ID = "annals-aggregate-id"
H_SEQUENCE = "annals-sequence"
H_OCCURRED_AT = "annals-occurred-at"
H_ACTOR = "annals-actor"
H_COMMAND_ID = "annals-command-id"
H_CORRELATION_ID = "annals-correlation-id"
H_CAUSATION_ID = "annals-causation-id"
H_TRACE_CONTEXT = "annals-trace-context"
H_CONTENT_TYPE = "annals-content-type"
H_PREV_HASH = "annals-prev-hash"
H_HASH = "annals-hash"
EXTENSION_PREFIX = "annals-ext-"

REQUIRED = [
    H_WIRE_VERSION, H_EVENT_ID, H_EVENT_TYPE, H_SCHEMA_VERSION, H_AGGREGATE_TYPE,
    H_AGGREGATE_ID, H_SEQUENCE, H_OCCURRED_AT, H_ACTOR, H_COMMAND_ID, H_CORRELATION_ID,
    H_CAUSATION_ID, H_CONTENT_TYPE, H_PREV_HASH, H_HASH,
]

UUID_RE = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
DECIMAL_RE = re.compile(r"^(0|[1-9][0-9]*)$")
HASH_RE = re.compile(r"^[0-9a-f]{64}$")
TIME_RE = re.compile(
    r"^([0-9]{4})-([0-9]{2})-([0-9]{2})T([0-9]{2}):([0-9]{2}):([0-9]{2})\.([0-9]{6})Z$"
)
EPOCH_ORDINAL = datetime.date(1970, 1, 1).toordinal()

# The Java client's own murmur2 test vectors (spec section "Partitioning").
MURMUR2_VECTORS = [
    (b"21", -973932308),
    (b"foobar", -790332482),
    (b"a-little-bit-long-string", -985981536),
    (b"a-little-bit-longer-string", -1486304829),
    (b"abc", 479470107),
]


class Bad(Exception):
    """One record fails the spec."""


# --- partitioning -------------------------------------------------------------------------


def murmur2(data):
    """Kafka's murmur2 (Java client Utils.murmur2), as a signed 32-bit integer."""
    m32 = 0xFFFFFFFF
    m = 0x5BD1E995
    r = 24
    length = len(data)
    h = (0x9747B28C ^ length) & m32
    for i in range(length // 4):
        k = struct.unpack_from("<I", data, 4 * i)[0]
        k = (k * m) & m32
        k ^= k >> r
        k = (k * m) & m32
        h = (h * m) & m32
        h ^= k
    tail = length & ~3
    rest = length % 4
    if rest == 3:
        h ^= data[tail + 2] << 16
    if rest >= 2:
        h ^= data[tail + 1] << 8
    if rest >= 1:
        h ^= data[tail]
        h = (h * m) & m32
    h ^= h >> 13
    h = (h * m) & m32
    h ^= h >> 15
    return h - (1 << 32) if h & 0x80000000 else h


def partition_for(key, partitions):
    return (murmur2(key) & 0x7FFFFFFF) % partitions


# --- header values ----------------------------------------------------------------------


def uuid_bytes(name, text):
    if not UUID_RE.match(text):
        raise Bad(f"header `{name}` = `{text}` is not a lowercase hyphenated UUID")
    return bytes.fromhex(text.replace("-", ""))


def decimal(name, text, bits):
    if not DECIMAL_RE.match(text):
        raise Bad(f"header `{name}` = `{text}` is not a canonical decimal number")
    n = int(text)
    if n >= 1 << bits:
        raise Bad(f"header `{name}` = `{text}` does not fit in {bits} bits")
    return n


def hash_bytes(name, text):
    if not HASH_RE.match(text):
        raise Bad(f"header `{name}` = `{text}` is not 64 lowercase hex digits")
    return bytes.fromhex(text)


def micros_since_epoch(text):
    """`YYYY-MM-DDTHH:MM:SS.ffffffZ` to integer microseconds since 1970-01-01T00:00:00Z."""
    m = TIME_RE.match(text)
    if not m:
        raise Bad(
            f"header `{H_OCCURRED_AT}` = `{text}` is not YYYY-MM-DDTHH:MM:SS.ffffffZ"
        )
    year, month, day, hour, minute, second, micros = (int(g) for g in m.groups())
    try:
        days = datetime.date(year, month, day).toordinal() - EPOCH_ORDINAL
    except ValueError as e:
        raise Bad(f"header `{H_OCCURRED_AT}` = `{text}`: {e}") from None
    if hour > 23 or minute > 59 or second > 59:
        raise Bad(f"header `{H_OCCURRED_AT}` = `{text}`: time of day out of range")
    return ((days * 86400 + hour * 3600 + minute * 60 + second) * 1_000_000) + micros


# --- canonical encoding -----------------------------------------------------------------


def enc_u32(n):
    return struct.pack(">I", n)


def enc_bytes(b):
    return enc_u32(len(b)) + b


def enc_str(s):
    return enc_bytes(s.encode("utf-8"))


def canonical(ev):
    """The canonical encoding, version 1, of a decoded event (spec "Hash chain")."""
    out = bytearray()
    out += enc_str(HASH_DOMAIN)
    out += ev["prev_hash"]
    out += ev["event_id"]
    out += enc_str(ev["aggregate_type"])
    out += enc_str(ev["aggregate_id"])
    out += struct.pack(">Q", ev["sequence"])
    out += enc_str(ev["event_type"])
    out += struct.pack(">I", ev["schema_version"])
    out += struct.pack(">q", ev["occurred_at_us"])
    out += enc_str(ev["actor"])
    out += ev["command_id"]
    out += ev["correlation_id"]
    out += ev["causation_id"]
    if ev["trace_context"] is None:
        out += b"\x00"
    else:
        out += b"\x01" + enc_str(ev["trace_context"])
    extensions = sorted(ev["extensions"].items(), key=lambda kv: kv[0].encode("utf-8"))
    out += enc_u32(len(extensions))
    for k, v in extensions:
        out += enc_str(k) + enc_str(v)
    out += enc_str(ev["content_type"])
    out += enc_bytes(ev["payload"])
    return bytes(out)


# --- records ----------------------------------------------------------------------------


def where(rec):
    return f"{rec.get('topic')}/{rec.get('partition')}@{rec.get('offset')}"


def header_map(rec):
    raw = rec.get("headers")
    if raw is None:
        raw = {}
    if isinstance(raw, dict):
        pairs = list(raw.items())
    elif isinstance(raw, list):
        pairs = [tuple(p) for p in raw]
    else:
        raise Bad("`headers` is neither an object nor a list of [name, value] pairs")
    fields, extensions = {}, {}
    for pair in pairs:
        if len(pair) != 2 or not isinstance(pair[0], str):
            raise Bad(f"header entry {list(pair)!r} is not a [name, value] pair")
        name, value = pair
        if value is None:
            raise Bad(f"header `{name}` has no value")
        if not isinstance(value, str):
            raise Bad(f"header `{name}` is not UTF-8 text in the dump")
        if name.startswith(EXTENSION_PREFIX):
            target, key = extensions, name[len(EXTENSION_PREFIX):]
        else:
            target, key = fields, name
        if key in target:
            raise Bad(f"header `{name}` appears twice")
        target[key] = value
    return fields, extensions


def decode(rec):
    """Decodes one record into the event fields the hash covers, or raises Bad."""
    fields, extensions = header_map(rec)
    if H_WIRE_VERSION not in fields:
        raise Bad(f"missing header `{H_WIRE_VERSION}`: not an annals event")
    if fields[H_WIRE_VERSION] != WIRE_VERSION:
        raise Bad(
            f"wire-format version `{fields[H_WIRE_VERSION]}` is not supported "
            f"(this checker knows {WIRE_VERSION})"
        )
    for name in REQUIRED:
        if name not in fields:
            raise Bad(f"missing header `{name}`")
    key = rec.get("key")
    if key is None:
        raise Bad("record has no key")
    if key != fields[H_AGGREGATE_ID]:
        raise Bad(f"record key differs from header `{H_AGGREGATE_ID}` = `{fields[H_AGGREGATE_ID]}`")
    agg_id = fields[H_AGGREGATE_ID]
    if not agg_id or len(agg_id.encode("utf-8")) > MAX_AGGREGATE_ID_BYTES:
        raise Bad(f"aggregate id is empty or longer than {MAX_AGGREGATE_ID_BYTES} bytes")
    value = rec.get("value")
    if value is None:
        raise Bad("record has no value (null)")
    try:
        payload = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError) as e:
        raise Bad(f"`value` is not base64: {e}") from None
    sequence = decimal(H_SEQUENCE, fields[H_SEQUENCE], 64)
    if sequence < 1:
        raise Bad(f"header `{H_SEQUENCE}` is 0; sequences start at 1")
    return {
        "event_id": uuid_bytes(H_EVENT_ID, fields[H_EVENT_ID]),
        "event_id_text": fields[H_EVENT_ID],
        "event_type": fields[H_EVENT_TYPE],
        "schema_version": decimal(H_SCHEMA_VERSION, fields[H_SCHEMA_VERSION], 32),
        "aggregate_type": fields[H_AGGREGATE_TYPE],
        "aggregate_id": agg_id,
        "sequence": sequence,
        "occurred_at_us": micros_since_epoch(fields[H_OCCURRED_AT]),
        "actor": fields[H_ACTOR],
        "command_id": uuid_bytes(H_COMMAND_ID, fields[H_COMMAND_ID]),
        "correlation_id": uuid_bytes(H_CORRELATION_ID, fields[H_CORRELATION_ID]),
        "causation_id": uuid_bytes(H_CAUSATION_ID, fields[H_CAUSATION_ID]),
        "trace_context": fields.get(H_TRACE_CONTEXT),
        "extensions": extensions,
        "content_type": fields[H_CONTENT_TYPE],
        "prev_hash": hash_bytes(H_PREV_HASH, fields[H_PREV_HASH]),
        "hash": hash_bytes(H_HASH, fields[H_HASH]),
        "payload": payload,
    }


def reject_constant(name):
    raise ValueError(f"`{name}` is not JSON")


def check_record(rec, ev, partitions):
    """The checks of one record that need no other record."""
    problems = []
    computed = hashlib.sha256(canonical(ev)).digest()
    if computed != ev["hash"]:
        problems.append(
            f"hash mismatch: stored {ev['hash'].hex()}, computed {computed.hex()} "
            "(the event's content differs from what was hashed)"
        )
    expected_partition = partition_for(ev["aggregate_id"].encode("utf-8"), partitions)
    if rec["partition"] != expected_partition:
        problems.append(
            f"misplaced: key `{ev['aggregate_id']}` belongs on partition "
            f"{expected_partition} of {partitions}, found on {rec['partition']}"
        )
    suffix = f".{ev['aggregate_type']}.events"
    if not rec["topic"].endswith(suffix) or len(rec["topic"]) == len(suffix):
        problems.append(
            f"topic `{rec['topic']}` is not the event topic `{{prefix}}{suffix}` "
            f"of aggregate type `{ev['aggregate_type']}`"
        )
    ts = rec.get("timestamp")
    if ts is not None:
        expected_ts = ev["occurred_at_us"] // 1000
        if ts != expected_ts:
            problems.append(
                f"record timestamp {ts} is not the occurred-at time in ms ({expected_ts})"
            )
    if ev["content_type"] == "application/json":
        try:
            json.loads(ev["payload"].decode("utf-8"), parse_constant=reject_constant)
        except (UnicodeDecodeError, ValueError) as e:
            problems.append(f"payload is not UTF-8 JSON: {e}")
    return problems


def load(path):
    with open(path, "rb") as f:
        doc = json.load(f)
    records = doc.get("records") if isinstance(doc, dict) else doc
    if not isinstance(records, list):
        raise ValueError("expected a list of records or {\"records\": [...]}")
    for i, rec in enumerate(records):
        if not isinstance(rec, dict):
            raise ValueError(f"record #{i} is not an object")
        for field, kind in (("topic", str), ("partition", int), ("offset", int)):
            if not isinstance(rec.get(field), kind) or isinstance(rec.get(field), bool):
                raise ValueError(f"record #{i} has no valid `{field}`")
        if rec["partition"] < 0 or rec["offset"] < 0:
            raise ValueError(f"record #{i} has a negative partition or offset")
    return records


def self_test():
    for data, expected in MURMUR2_VECTORS:
        got = murmur2(data)
        if got != expected:
            sys.exit(f"internal error: murmur2({data!r}) = {got}, expected {expected}")


def main():
    parser = argparse.ArgumentParser(
        description="Verify annals event records (wire format 1): hashes, chains, placement."
    )
    parser.add_argument("dump", help="JSON dump of event records")
    parser.add_argument(
        "--partitions", type=int, required=True,
        help="partition count of the event topic(s), for the murmur2 placement check",
    )
    parser.add_argument(
        "--from-middle", action="store_true",
        help="the dump starts mid-partition: anchor each chain at its first event seen",
    )
    args = parser.parse_args()
    if args.partitions < 1:
        parser.error("--partitions must be at least 1")
    self_test()

    try:
        records = load(args.dump)
    except (OSError, ValueError) as e:
        print(f"wire-format-check: cannot read {args.dump}: {e}", file=sys.stderr)
        return 2

    records.sort(key=lambda r: (r["topic"], r["partition"], r["offset"]))
    errors = []
    seen_offsets = set()
    seen_event_ids = {}
    # (topic, aggregate id) -> (sequence, hash, where) of the last event seen
    heads = {}
    aggregates = set()
    for rec in records:
        at = where(rec)
        if (rec["topic"], rec["partition"], rec["offset"]) in seen_offsets:
            errors.append(f"{at}: two records at the same offset")
            continue
        seen_offsets.add((rec["topic"], rec["partition"], rec["offset"]))
        try:
            ev = decode(rec)
        except Bad as e:
            errors.append(f"{at}: {e}")
            continue
        name = f"{ev['aggregate_type']}/{ev['aggregate_id']} sequence {ev['sequence']}"
        for problem in check_record(rec, ev, args.partitions):
            errors.append(f"{at} ({name}): {problem}")
        if ev["event_id_text"] in seen_event_ids:
            errors.append(
                f"{at} ({name}): event id {ev['event_id_text']} already stored at "
                f"{seen_event_ids[ev['event_id_text']]}"
            )
        seen_event_ids.setdefault(ev["event_id_text"], at)

        stream = (rec["topic"], ev["aggregate_id"])
        aggregates.add(stream)
        head = heads.get(stream)
        if head is None and not args.from_middle:
            head = (0, ZERO_HASH, None)
        if head is not None:
            last_seq, last_hash, last_at = head
            if ev["sequence"] != last_seq + 1:
                kind = "sequence gap" if ev["sequence"] > last_seq else "sequence out of order"
                errors.append(
                    f"{at} ({name}): {kind}: expected {last_seq + 1} after "
                    f"{last_at or 'the start of the stream'}"
                )
            elif ev["prev_hash"] != last_hash:
                errors.append(
                    f"{at} ({name}): chain broken: prev hash {ev['prev_hash'].hex()} is not "
                    f"the hash of sequence {last_seq} ({last_hash.hex()})"
                )
        # Continue from the stored values, so one bad record is reported once.
        heads[stream] = (ev["sequence"], ev["hash"], at)

    if errors:
        for e in errors:
            print(f"wire-format-check: {e}", file=sys.stderr)
        print(
            f"wire-format-check: FAILED: {len(errors)} problem(s) in {len(records)} record(s)",
            file=sys.stderr,
        )
        return 1
    print(
        f"wire-format-check: OK: {len(records)} record(s) of {len(aggregates)} aggregate(s); "
        f"hashes, chains and placement over {args.partitions} partition(s) verified"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
