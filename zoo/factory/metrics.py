"""Run metrics through ``ray.util.metrics``: on the dashboard and the node's Prometheus endpoint.

Recorded by the driver when a task's result arrives (only when the run uses Ray).
Counters export as ``<name>_total``; every series is tagged with ``run_id`` (the
zoo id), so several zoos generated on one cluster stay apart.
"""

from __future__ import annotations

COUNTERS: dict[str, str] = {
    "zoo_models_trained": "Subject models trained (clean and degraded).",
    "zoo_pairs_kept": "Degraded/clean pairs kept as records.",
    "zoo_pairs_dropped": "Pairs dropped for too little degradation.",
    "zoo_shards_written": "Shards listed in the manifest.",
    "zoo_bytes_written": "Bytes of shards listed in the manifest.",
}
GAUGE = "zoo_models_per_second"


class RunMetrics:
    """The zoo's counters and its models/s gauge, all tagged with one ``run_id``."""

    def __init__(self, run_id: str):
        from ray.util.metrics import Counter, Gauge

        self.tags = {"run_id": run_id}
        self.counters = {name: Counter(name, description=doc, tag_keys=("run_id",)) for name, doc in COUNTERS.items()}
        self.gauge = Gauge(GAUGE, description="Models trained per second over the run so far.", tag_keys=("run_id",))

    def record(self, *, models: int, kept: int, dropped: int, shards: int, bytes_: int, models_per_second: float) -> None:
        values = {
            "zoo_models_trained": models,
            "zoo_pairs_kept": kept,
            "zoo_pairs_dropped": dropped,
            "zoo_shards_written": shards,
            "zoo_bytes_written": bytes_,
        }
        for name, value in values.items():
            if value > 0:  # Counter.inc refuses zero
                self.counters[name].inc(value, tags=self.tags)
        self.gauge.set(models_per_second, tags=self.tags)
