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
"""

import logging
import sys
import threading


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
