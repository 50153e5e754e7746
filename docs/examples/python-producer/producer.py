"""A Riffle producer in Python: page views onto the raw stream, as a producer team outside
the Rust code base would write one.

What it does, and why each step is there:
1. Serializes each page view with Confluent's AvroSerializer against Riffle's registry
   (RIFFLE_REGISTRY_URL). The subject is the record's full name (Confluent's
   record_subject_name_strategy), which is how Riffle names subjects; the schema is
   registered on first use, and the registry's compatibility check applies to it.
2. Wraps it in Riffle's envelope: event id, source, subject, the payload's schema id, event
   and ingest times, and the Avro body without its 5-byte Confluent frame (the envelope names
   the schema itself). The envelope is serialized with the envelope schema the stages
   registered (com.riffle.pipeline.Envelope, latest version), framed as Confluent frames it.
3. Puts the records with PutRecords in batches of up to 500, partitioned by session, and
   puts again the entries Kinesis refused (throttling) with backoff, keeping the same event
   ids: the validator drops a repeated event id within its window, so a retried put is not
   counted twice.

It stamps no `origin`: that is what riffle-producer adds for exactly-once effects from the
producer on (ADR 0010). Records without one are checked by event id instead.

Endpoints come from the standard AWS variables (AWS_ENDPOINT_URL_KINESIS, AWS_REGION,
credentials), so the same script runs against `riffle-dev up` and against AWS.

Usage: python producer.py [--stream NAME] [--events N] [--seed S] [--invalid N]
Prints one JSON line: what was sent, per device (count and dwell sum), for checking.
"""

import argparse
import json
import os
import random
import sys
import time
import uuid
from pathlib import Path

import boto3
from confluent_kafka.schema_registry import SchemaRegistryClient, record_subject_name_strategy
from confluent_kafka.schema_registry.avro import AvroSerializer
from confluent_kafka.serialization import MessageField, SerializationContext

HERE = Path(__file__).resolve().parent
PAGE_VIEW_SCHEMA = HERE / "../../../schemas/events/page_view.avsc"
ENVELOPE_SCHEMA = HERE / "../../../schemas/envelope.avsc"
SOURCE = "python-example"
DEVICES = ["DESKTOP", "MOBILE", "TABLET"]
# PutRecords takes at most 500 entries per call.
BATCH = 500


def page_view(rng: random.Random, now_ms: int, valid: bool) -> dict:
    view = {
        "session_id": f"ses-{rng.getrandbits(32):08x}",
        "user_id": None,
        "path": rng.choice(["/", "/shop", "/shop/books", "/help/returns"]),
        "referrer": None,
        "device": rng.choice(DEVICES),
        "dwell_ms": rng.randrange(100, 60_000),
        "viewed_at": now_ms,
        "utm": {"campaign": "examples"},
    }
    if not valid:
        # The PageView contract allows lowercase paths only: the validator rejects this one
        # with its reason, on the rejects queue.
        view["path"] = "/NOT-ALLOWED"
    return view


def unframe(framed: bytes) -> tuple[int, bytes]:
    """Confluent frame -> (schema id, Avro body)."""
    if len(framed) < 5 or framed[0] != 0:
        raise ValueError("not a Confluent-framed record")
    return int.from_bytes(framed[1:5], "big"), framed[5:]


def put_all(kinesis, stream: str, entries: list[dict]) -> int:
    """Puts every entry, retrying refused ones with backoff; returns the attempts made."""
    attempts = 0
    pending = entries
    delay = 0.1
    while pending:
        attempts += 1
        out = kinesis.put_records(StreamName=stream, Records=pending)
        if out.get("FailedRecordCount", 0) == 0:
            return attempts
        pending = [e for e, r in zip(pending, out["Records"]) if "ErrorCode" in r]
        if attempts >= 10:
            raise RuntimeError(f"{len(pending)} records still refused after {attempts} puts")
        time.sleep(delay)
        delay = min(delay * 2, 2.0)
    return attempts


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--stream",
        default=os.environ.get("RIFFLE_RAW_STREAM"),
        help="the raw stream's name (default: RIFFLE_RAW_STREAM, which riffle-dev up prints)",
    )
    parser.add_argument("--events", type=int, default=1000, help="valid page views to send")
    parser.add_argument("--invalid", type=int, default=0, help="page views the contract rejects")
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()
    if not args.stream:
        print("error: no --stream and RIFFLE_RAW_STREAM is not set", file=sys.stderr)
        return 2
    registry_url = os.environ.get("RIFFLE_REGISTRY_URL")
    if not registry_url:
        print("error: RIFFLE_REGISTRY_URL is not set (riffle-dev up prints it)", file=sys.stderr)
        return 2

    registry = SchemaRegistryClient({"url": registry_url})
    payload_serializer = AvroSerializer(
        registry,
        PAGE_VIEW_SCHEMA.read_text(),
        conf={"subject.name.strategy": record_subject_name_strategy},
    )
    envelope_serializer = AvroSerializer(
        registry,
        ENVELOPE_SCHEMA.read_text(),
        conf={
            "auto.register.schemas": False,
            "use.latest.version": True,
            "subject.name.strategy": record_subject_name_strategy,
        },
    )
    ctx = SerializationContext("riffle-raw", MessageField.VALUE)

    rng = random.Random(args.seed)
    kinesis = boto3.client("kinesis")
    sent = {"valid": 0, "invalid": 0, "puts": 0, "devices": {}}
    kinds = [True] * args.events + [False] * args.invalid
    rng.shuffle(kinds)
    entries = []
    for valid in kinds:
        now_ms = int(time.time() * 1000)
        view = page_view(rng, now_ms, valid)
        schema_id, body = unframe(payload_serializer(view, ctx))
        envelope = {
            "event_id": str(uuid.uuid4()),
            "source": SOURCE,
            "subject": "com.riffle.web.PageView",
            "schema_id": schema_id,
            "event_time": now_ms,
            "ingest_time": now_ms,
            "stage_times": {},
            "trace_header": None,
            "payload": body,
            "enrichment": None,
            "origin": None,
        }
        entries.append({"Data": envelope_serializer(envelope, ctx), "PartitionKey": view["session_id"]})
        if valid:
            sent["valid"] += 1
            per = sent["devices"].setdefault(view["device"], {"count": 0, "dwell_ms": 0})
            per["count"] += 1
            per["dwell_ms"] += view["dwell_ms"]
        else:
            sent["invalid"] += 1
        if len(entries) == BATCH:
            sent["puts"] += put_all(kinesis, args.stream, entries)
            entries = []
    if entries:
        sent["puts"] += put_all(kinesis, args.stream, entries)
    print(json.dumps(sent, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
