"""The edge's Prometheus metrics: sync state per bucket, read model size."""

from __future__ import annotations

from collections.abc import Callable, Iterator

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from edge.follower import BucketFollower
from edge.inference import ModelShelf
from edge.readmodel import ReadModel
from edge.shedding import Admission, LoopLag


class SyncCollector(Collector):
    """Reads each follower's status at scrape time: nothing to keep in step."""

    def __init__(self, followers: list[BucketFollower], model: ReadModel, clock: Callable[[], float]) -> None:
        self.followers = followers
        self.model = model
        self.clock = clock

    def collect(self) -> Iterator[Metric]:
        now = self.clock()
        lag_s = GaugeMetricFamily(
            "waypost_sync_lag_seconds",
            "Seconds since the origin last confirmed the bucket",
            labels=["bucket"],
        )
        lag_changes = GaugeMetricFamily(
            "waypost_sync_lag_changes", "Changes between the cursor and the origin's head", labels=["bucket"]
        )
        cursor = GaugeMetricFamily("waypost_sync_cursor", "Last applied sequence", labels=["bucket"])
        ok = GaugeMetricFamily("waypost_sync_checksum_ok", "1 when the last page verified", labels=["bucket"])
        counters = {
            name: CounterMetricFamily(f"waypost_sync_{name}", help_, labels=["bucket"])
            for name, help_ in (
                ("pages", "Feed pages applied"),
                ("changes", "Changes applied"),
                ("snapshots", "Snapshots loaded"),
                ("rebootstraps", "Re-bootstraps after a 409, a new epoch or a refused page"),
                ("refused_pages", "Pages refused by the checksum or sequence check"),
            )
        }
        for f in self.followers:
            st = f.status
            lag_s.add_metric([st.bucket], now - st.synced_at if st.synced_at else float("nan"))
            lag_changes.add_metric([st.bucket], max(st.head - st.cursor, 0))
            cursor.add_metric([st.bucket], st.cursor)
            ok.add_metric([st.bucket], 1.0 if st.checksum_ok else 0.0)
            for name, family in counters.items():
                family.add_metric([st.bucket], getattr(st, name))
        yield from (lag_s, lag_changes, cursor, ok, *counters.values())
        shipments = GaugeMetricFamily("waypost_replica_shipments", "Shipments in the read model")
        shipments.add_metric([], sum(self.model.count(f.bucket, "shipment") for f in self.followers))
        yield shipments


class LoadCollector(Collector):
    def __init__(self, lag: LoopLag, admission: Admission) -> None:
        self.lag = lag
        self.admission = admission

    def collect(self) -> Iterator[Metric]:
        lag = GaugeMetricFamily("waypost_loop_lag_seconds", "Event-loop lag (EWMA of a 10 ms timer)")
        lag.add_metric([], self.lag.lag_s)
        shed = CounterMetricFamily("waypost_shed", "Requests refused with 503 to shed load")
        shed.add_metric([], self.admission.shed)
        limit = GaugeMetricFamily(
            "waypost_admission_limit", "Requests admitted and not yet answered, at most (adaptive)"
        )
        limit.add_metric([], self.admission.limit)
        yield from (lag, shed, limit)


class ModelCollector(Collector):
    def __init__(self, shelf: ModelShelf) -> None:
        self.shelf = shelf

    def collect(self) -> Iterator[Metric]:
        serving = GaugeMetricFamily(
            "waypost_model_serving",
            "1 for each model release serving, by role",
            labels=["name", "version", "role"],
        )
        for name, slot in self.shelf.slots.items():
            for role, m in (("active", slot.active), ("previous", slot.previous), ("canary", slot.canary)):
                if m is not None:
                    serving.add_metric([name, m.version, role], 1.0)
            for m in slot.shadows:
                serving.add_metric([name, m.version, "shadow"], 1.0)
        refused = CounterMetricFamily("waypost_model_refused", "Model blobs refused (hash or test vectors)")
        refused.add_metric([], self.shelf.refused)
        yield from (serving, refused)


class EdgeMetrics:
    """Every metric the edge exports, on a registry of its own."""

    def __init__(
        self,
        followers: list[BucketFollower],
        model: ReadModel,
        clock: Callable[[], float],
        lag: LoopLag,
        admission: Admission,
        shelf: ModelShelf,
    ) -> None:
        self.registry = CollectorRegistry()
        self.registry.register(SyncCollector(followers, model, clock))
        self.registry.register(LoadCollector(lag, admission))
        self.registry.register(ModelCollector(shelf))
        r = self.registry
        self.page_seconds = Histogram(
            "waypost_page_seconds",
            "Time to answer a page or lookup, by route",
            ["route"],
            buckets=(0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0),
            registry=r,
        )
        self.page_cache = Counter("waypost_page_cache", "Rendered-page cache lookups", ["result"], registry=r)
        self.not_modified = Counter("waypost_page_not_modified", "304 answers to If-None-Match", registry=r)
        self.throttled = Counter("waypost_throttled", "429 answers, by limit", ["limit"], registry=r)
        self.unlock_failed = Counter("waypost_unlock_failed", "Wrong postcodes", registry=r)
        # Routing (edge/routing.py, edge/outbox.py)
        self.route_decisions = Counter(
            "waypost_route_decisions",
            "POST /v1/route answers by outcome: confirmed, provisional, repeated, or the error code "
            "(insufficient_stock, invalid_body, unknown_sku, unauthorized, …)",
            ["outcome"],
            registry=r,
        )
        self.route_seconds = Histogram(
            "waypost_route_seconds",
            "Time to answer POST /v1/route, holds at the origin included",
            buckets=(0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0, 2.5),
            registry=r,
        )
        self.shadow_decisions = Counter(
            "waypost_shadow_decisions",
            "Decisions a shadow model also scored; agreed=true when it chose the same sites",
            ["model", "version", "agreed"],
            registry=r,
        )
        self.outbox_depth = Gauge(
            "waypost_outbox_depth",
            "Decisions whose holds wait to reach the origin: provisional, or drawn and sending",
            registry=r,
        )
        self.route_holds = Counter(
            "waypost_route_holds",
            "Holds of new decisions by where they came from: allotment (drawn here, sent to the "
            "origin after the answer) or origin (asked for before the answer)",
            ["source"],
            registry=r,
        )
        self.allotments = Counter(
            "waypost_allotments",
            "Allotments asked of the origin, by result: granted, refused, unreachable, released",
            ["result"],
            registry=r,
        )
        self.outbox_events = Counter(
            "waypost_outbox_events",
            "Outbox replays and re-routes: replayed, unreachable, refused, rerouted, unfilled",
            ["event"],
            registry=r,
        )
