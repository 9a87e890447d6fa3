"""Starts the moto emulator for skiff's tests on a loopback port.

Usage: python moto_server.py [--port N] [--host 127.0.0.1]

Prints `PORT <n>` on stdout once the server accepts connections (port 0 picks
a free one), and exits when its stdin closes, so a test process that dies
never leaves an emulator behind.

Where moto differs from AWS in a way that would let wrong product code pass a
test, the differences are corrected here, before the server starts; each
correction names the AWS behaviour it restores (see `patches/`).
"""

import argparse
import os
import sys
import threading

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--no-stdin-watch", action="store_true",
                        help="keep running when stdin closes (for a long-lived demo emulator)")
    args = parser.parse_args()

    import patches  # noqa: F401  (applies the AWS-fidelity corrections on import)
    from moto.moto_server.threaded_moto_server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address=args.host, port=args.port, verbose=False)
    server.start()
    _, port = server.get_host_and_port()
    print(f"PORT {port}", flush=True)

    if args.no_stdin_watch:
        threading.Event().wait()
    else:
        # The parent holds our stdin; EOF means it is gone.
        try:
            while sys.stdin.read(65536):
                pass
        except (OSError, ValueError):
            pass
    os._exit(0)


if __name__ == "__main__":
    main()
