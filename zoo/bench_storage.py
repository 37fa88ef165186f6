"""Object storage against a local folder: the same zoo generated to both, the time ratio printed.

    python -m zoo.bench_storage --config configs/zoo/quickstart.yaml --workers 0

The S3 side is moto's S3-compatible server on a loopback port (``pip install "moto[server]" boto3``,
the test extra), so the figure is the protocol's cost (its PUTs, lists and reads), not a
network's. Both runs write the same records; the script checks that too.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import socket
import tempfile
import time
from pathlib import Path

from rich.console import Console

from zoo.config import zoo_config_from
from zoo.factory.reader import read_records
from zoo.factory.runner import generate
from zoo.factory.schema import content_hash


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="configs/zoo/quickstart.yaml", help="zoo config YAML")
    parser.add_argument("--workers", type=int, default=0, help="Ray actors (0: in-process)")
    args = parser.parse_args(argv)
    for key, value in (("AWS_ACCESS_KEY_ID", "bench"), ("AWS_SECRET_ACCESS_KEY", "bench"), ("AWS_REGION", "us-east-1")):
        os.environ.setdefault(key, value)
    import boto3
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # moto's request log
    port = _free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        os.environ["AWS_ENDPOINT_URL"] = f"http://127.0.0.1:{port}"
        boto3.client("s3", endpoint_url=os.environ["AWS_ENDPOINT_URL"]).create_bucket(Bucket="bench")
        config = zoo_config_from(args.config, workers=args.workers)
        quiet = Console(quiet=True)
        with tempfile.TemporaryDirectory() as tmp:
            start = time.perf_counter()
            generate(config, Path(tmp) / "zoo", console=quiet)
            local = time.perf_counter() - start
            start = time.perf_counter()
            generate(config, "s3://bench/zoo", console=quiet)
            remote = time.perf_counter() - start
            same = content_hash(read_records(Path(tmp) / "zoo")) == content_hash(read_records("s3://bench/zoo"))
    finally:
        server.stop()
    print(json.dumps({"local_s": round(local, 2), "s3_s": round(remote, 2), "ratio": round(remote / local, 2), "same_records": same}))
    return 0 if same else 1


if __name__ == "__main__":
    raise SystemExit(main())
