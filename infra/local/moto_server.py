"""Starts moto's server (DynamoDB, S3, SQS, ...) for one local Riffle run.

Usage: python moto_server.py <port>     (0 picks any free port)

Why a wrapper and not the moto_server command: it binds 127.0.0.1 only, it reports the port it got as
one line `READY <port>` (so port 0 works without a bind-then-release race), and it exits
when its stdin closes, so it never outlives the process that started it.

It also handles one request at a time. moto's threaded server runs requests in parallel
threads with no locking in its backends, so two conditional writes (DynamoDB
ConditionExpression, TransactWriteItems) racing each other can both succeed — which real
DynamoDB never allows, and which Riffle's id allocation and optimistic view updates rely on.
Connections are still accepted concurrently; only the backend call is serialized. Python's
GIL already kept moto to one core, so this costs little throughput.

And it corrects one reply: moto's X-Ray GetTraceSummaries writes each summary's `Users` as an
object where the API has a list, and strict clients (the Rust SDK) then refuse the whole reply
(see fix_xray_trace_summaries).
"""

import logging
import os
import sys
import threading


def fix_xray_trace_summaries() -> None:
    """Each summary's `Users` as the empty list the API defines, not moto's `{}`."""
    from moto.xray.models import SegmentCollection

    summary = SegmentCollection.summary

    def fixed(self, *args, **kwargs):
        result = summary(self, *args, **kwargs)
        for trace in result.get("TraceSummaries", []):
            if trace.get("Users") == {}:
                trace["Users"] = []
        return result

    SegmentCollection.summary = fixed


def cache_backend_lookup(app) -> None:
    """Finds each host's backend once, not on every request.

    moto looks the backend up per request by listing its own package folder (a directory
    read and a stat per service, about 200) and then matching the host against every
    service's URL patterns: under the pipeline's load that was a sixth of the emulator's CPU
    (py-spy), paid again on each of a few thousand requests a run. Which backend serves a
    host never changes while the server runs, so the answer is kept per host.
    """
    from moto import backends

    modules = tuple(backends.list_of_moto_modules())
    backends.list_of_moto_modules = lambda: modules
    lookup = app.get_backend_for_host
    found = {}

    def cached(host):
        if host not in found:
            found[host] = lookup(host)
        return found[host]

    app.get_backend_for_host = cached


def cache_handler_methods() -> None:
    """Lists each response class's methods once, not on every request.

    moto checks that the requested action is a method of the service's response class by
    listing the class's members with `inspect` on every request (an eighth of a simple
    DynamoDB request's CPU, py-spy). A class's methods do not change while the server runs.
    """
    from moto.core import responses

    listed = {}
    list_methods = responses.method_names_from_class

    def cached(clazz):
        if clazz not in listed:
            listed[clazz] = frozenset(list_methods(clazz))
        return listed[clazz]

    responses.method_names_from_class = cached


# DynamoDB's item operations: their results are plain wire-shaped dicts (attribute values,
# capacity figures), which JSON writes as they are.
DIRECT_DYNAMODB_ACTIONS = frozenset(
    [
        "GetItem",
        "PutItem",
        "UpdateItem",
        "DeleteItem",
        "BatchGetItem",
        "BatchWriteItem",
        "Query",
        "Scan",
        "TransactGetItems",
        "TransactWriteItems",
    ]
)


def write_dynamodb_items_directly() -> None:
    """Writes the replies of DynamoDB's item operations straight to JSON.

    moto writes every reply by walking the operation's output model member by member, with
    a key lookup that tries several spellings of each name; for item operations that walk
    was a third of the DynamoDB emulator's CPU under the pipeline's load (py-spy), more than
    the operations themselves. Their results are already the wire's dicts; what the walk
    added is kept here: binary attributes (bytes) as base64, absent members (None) left
    out. Errors and every other operation keep moto's own serializer.
    """
    import base64
    import json

    from moto.dynamodb.responses import DynamoHandler

    def wire(value):
        if isinstance(value, dict):
            return {k: wire(v) for k, v in value.items() if v is not None}
        if isinstance(value, list):
            return [wire(v) for v in value]
        if isinstance(value, bytes):
            return base64.b64encode(value).decode("ascii")
        return value

    serialized = DynamoHandler.serialized

    def direct(self, action_result):
        result = action_result.result
        if isinstance(result, dict) and self._get_action() in DIRECT_DYNAMODB_ACTIONS:
            headers = {"Content-Type": "application/x-amz-json-1.0"}
            headers.update(self.response_headers)
            return 200, headers, json.dumps(wire(result), separators=(",", ":"))
        return serialized(self, action_result)

    DynamoHandler.serialized = direct


def keep_recording_open() -> None:
    """Keeps the request recorder's file open while it records.

    moto's recorder opens, writes and closes its file for every request it keeps, under the
    lock that serializes the backend (see main). The demo records the local DynamoDB (to hold
    the stages' item counts to the emulator's), and there each of those file calls let the
    request threads take the GIL, so the backend waited about a millisecond a request with
    the lock held (cProfile: a tenth of the emulator's time, first in the open, then in a
    flush). Here the recorder appends to one buffered handle, which is flushed and closed
    before the recording is reset, replaced or read (moto's endpoints for those are the only
    readers).
    """
    import builtins

    from moto.moto_api._internal.recorder import models

    kept = {}

    class Appending:
        def __init__(self, file):
            self.file = file

        def __enter__(self):
            return self.file

        def __exit__(self, *exc):
            return False

    def recorder_open(path, mode="r", *args, **kwargs):
        if mode == "a+":
            if path not in kept:
                kept[path] = builtins.open(path, "a", *args, **kwargs)
            return Appending(kept[path])
        for file in kept.values():
            file.close()
        kept.clear()
        return builtins.open(path, mode, *args, **kwargs)

    # The recorder's module looks `open` up among its globals before the builtins.
    models.open = recorder_open


def main() -> None:
    if len(sys.argv) != 2 or not sys.argv[1].isdigit():
        print("usage: python moto_server.py <port>", file=sys.stderr)
        sys.exit(2)

    # One log line per request would cost the emulator more than the request under load.
    logging.getLogger("werkzeug").setLevel(logging.WARNING)
    from moto.moto_server.werkzeug_app import (
        DomainDispatcherApplication,
        MotoRequestHandler,
        create_backend_app,
    )
    from werkzeug.serving import make_server

    fix_xray_trace_summaries()
    # RIFFLE_MOTO_PLAIN=1 keeps moto's own request path and reply writer, for the test that
    # holds the shortcuts below to what moto itself answers.
    plain = os.environ.get("RIFFLE_MOTO_PLAIN") == "1"
    if not plain:
        write_dynamodb_items_directly()
        cache_handler_methods()
        keep_recording_open()
    app = DomainDispatcherApplication(create_backend_app)
    if not plain:
        cache_backend_lookup(app)
    lock = threading.Lock()

    def serialized(environ, start_response):
        with lock:
            # Materialise the body under the lock: a lazy iterator would run the backend later.
            return list(app(environ, start_response))

    server = make_server(
        "127.0.0.1", int(sys.argv[1]), serialized, threaded=True, request_handler=MotoRequestHandler
    )
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    print(f"READY {server.server_address[1]}", flush=True)

    # read() returns only at EOF: the parent closed the pipe or is gone.
    sys.stdin.buffer.read()
    server.shutdown()
    thread.join()


if __name__ == "__main__":
    main()
