"""A Redis-protocol server for the Celery broker of the production-shaped test (fakeredis).

Run as `python tests/production/redis_broker.py PORT`: serves until killed. It is the
project's own broker for the test stack, so no Redis has to be installed.
"""

from __future__ import annotations

import sys

from fakeredis import TcpFakeServer


def main(port: int) -> None:
    """Serve the Redis protocol on 127.0.0.1:`port` until the process is stopped."""
    server = TcpFakeServer(("127.0.0.1", port), server_type="redis")
    server.daemon_threads = True
    print(f"fakeredis listening on 127.0.0.1:{port}", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main(int(sys.argv[1]))
