"""Whether a Ray address has a Ray cluster behind it, asked in seconds before anything is written.

``ray.init(address=...)`` retries an address where nothing answers for minutes, and a
command that writes first (``zoo generate`` made ``zoo.json``) leaves that behind.
``check_reachable(address)`` asks the cluster's GCS for its id over gRPC, with a timeout
of ``REACH_TIMEOUT_S`` (an open port is not enough: a proxy or another server may hold it),
or, for a ``ray://`` address (Ray Client), whether its port accepts a connection; it raises
``RayConnectionError`` (one line) when no cluster answers.
"""

from __future__ import annotations

import os
import socket

REACH_TIMEOUT_S = 3.0
"""How long ``check_reachable`` waits for a cluster to answer."""


class RayConnectionError(ValueError):
    """The address names no reachable Ray cluster."""


def ray_endpoint(address: str | None) -> tuple[str, int] | None:
    """``(host, port)`` a Ray address names (``host:port``, ``ray://host:port``, ``host``), or None for
    ``auto``, ``local``, none, or a shape Ray resolves itself."""
    if not address or address in ("auto", "local"):
        return None
    scheme, sep, rest = address.partition("://")
    if sep and scheme not in ("ray", "ray+tcp"):
        return None
    rest = (rest if sep else address).split("/", 1)[0]
    if rest.startswith("["):  # [IPv6]:port
        host, _, port = rest[1:].partition("]")
        port = port.removeprefix(":")
    else:
        host, _, port = rest.partition(":")
    port = port or ("10001" if sep else "6379")  # Ray Client's port, or the GCS's
    return (host, int(port)) if host and port.isdigit() else None


def check_reachable(address: str | None, setting: str = "--address", timeout_s: float = REACH_TIMEOUT_S) -> None:
    """Refuse, in one line within ``timeout_s``, a Ray address where no Ray cluster answers.

    Ray itself retries an unreachable address for minutes. A cluster's GCS is asked for its
    id over gRPC (an open port is not enough: a proxy or another server may hold it); a
    ``ray://`` address (Ray Client) is checked for an open port. ``RAY_ADDRESS`` (a ``ray
    job``) is checked when no address is given; a Ray already running here needs nothing."""
    import ray

    if ray.is_initialized():
        return
    target = address or os.environ.get("RAY_ADDRESS")
    endpoint = ray_endpoint(target)
    if endpoint is None:
        return
    client = "://" in str(target)
    problem = _port_problem(endpoint, timeout_s) if client else _gcs_problem(endpoint, timeout_s)
    if problem is not None:
        raise RayConnectionError(
            f"{setting if address else 'RAY_ADDRESS'} {target}: no Ray cluster answers there ({problem}); "
            "start one (`ray start --head`) or leave the address out for a local Ray"
        )


def _port_problem(endpoint: tuple[str, int], timeout_s: float) -> str | None:
    try:
        with socket.create_connection(endpoint, timeout=timeout_s):
            return None
    except TimeoutError:
        return f"no answer within {timeout_s:g} s"
    except OSError as error:
        return (error.strerror or type(error).__name__).lower()


def _gcs_problem(endpoint: tuple[str, int], timeout_s: float) -> str | None:
    """None when a Ray GCS answers at ``endpoint`` (its cluster id, or a demand for a token)."""
    import grpc
    from ray.core.generated import gcs_service_pb2, gcs_service_pb2_grpc

    host, port = endpoint
    with grpc.insecure_channel(f"[{host}]:{port}" if ":" in host else f"{host}:{port}") as channel:
        stub = gcs_service_pb2_grpc.NodeInfoGcsServiceStub(channel)
        try:
            stub.GetClusterId(gcs_service_pb2.GetClusterIdRequest(), timeout=timeout_s)
        except grpc.RpcError as error:
            code = error.code()
            if code == grpc.StatusCode.UNAUTHENTICATED:  # a Ray that wants a token: Ray says so itself
                return None
            if code == grpc.StatusCode.DEADLINE_EXCEEDED:
                return f"no answer within {timeout_s:g} s"
            if code == grpc.StatusCode.UNAVAILABLE:
                return "cannot connect"
            return f"not a Ray cluster: {code.name.lower()}"
    return None
