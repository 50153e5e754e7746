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
    app = DomainDispatcherApplication(create_backend_app)
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
