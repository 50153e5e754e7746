"""Starts moto's server (DynamoDB, S3, SQS, ...) for one local Riffle run.

Usage: python moto_server.py <port>     (0 picks any free port)

Why a wrapper and not the moto_server command: it binds 127.0.0.1 only, it reports the port it got as
one line `READY <port>` (so port 0 works without a bind-then-release race), and it exits
when its stdin closes, so it never outlives the process that started it.
"""

import logging
import sys


def main() -> None:
    if len(sys.argv) != 2 or not sys.argv[1].isdigit():
        print("usage: python moto_server.py <port>", file=sys.stderr)
        sys.exit(2)

    # One log line per request would cost the emulator more than the request under load.
    logging.getLogger("werkzeug").setLevel(logging.WARNING)
    from moto.moto_server.threaded_moto_server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=int(sys.argv[1]), verbose=False)
    server.start()
    _, port = server.get_host_and_port()
    print(f"READY {port}", flush=True)

    # read() returns only at EOF: the parent closed the pipe or is gone.
    sys.stdin.buffer.read()
    server.stop()


if __name__ == "__main__":
    main()
