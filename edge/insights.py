"""What the models add to a shopper's page: an ETA band, recommendations, sizing help.

- ETA: when the carrier gave none, the delivery-time model's p50 with its p10–p90 band, for the
  site that shipped and the order's (rounded) destination.
- Recommendations: co-purchase candidates re-ranked by the recommender, only products in stock in
  this region, with a hint when a product the shopper buys regularly is due again.
- Return risk: lines likely to come back (size-sensitive ones, mostly) get sizing and exchange
  help.
Each part is skipped, never guessed, when its model is not loaded.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from edge.inference import ModelShelf
from edge.readmodel import CustomerOrders, HeldAtSite, ReadModel, RegionStock
from models.features import CustomerHistory, LineFacts, RecommendationContext
from models.serving import DeliveryTimeModel, RecommendationRanker, ReturnRiskModel
from sync.entities import ChangeKinds, CoPurchase, Order, Product, Shipment, Site, decode_entity

RETURN_RISK_NOTE = 0.3  # show sizing help above this chance of a return
RECOMMENDATIONS = 4


@dataclass(frozen=True)
class Suggestion:
    sku: str
    name: str
    price: float
    due: bool  # a product this customer re-buys, and it is about time


class Insights:
    def __init__(
        self,
        model: ReadModel,
        shelf: ModelShelf,
        global_bucket: str,
        region_bucket: str,
        customers: CustomerOrders,
        stock: RegionStock,
        held: HeldAtSite,
    ) -> None:
        self.model = model
        self.shelf = shelf
        self.global_bucket = global_bucket
        self.region_bucket = region_bucket
        self.customers = customers
        self.stock = stock
        self.held = held

    def _product(self, sku: str) -> Product | None:
        body = self.model.get(self.global_bucket, ChangeKinds.PRODUCT, sku)
        if body is None:
            return None
        product: Product = decode_entity(ChangeKinds.PRODUCT, body)
        return product

    def eta_band(self, s: Shipment, order: Order | None) -> tuple[datetime, datetime, datetime] | None:
        loaded = self.shelf.active("delivery_time")
        site_body = self.model.get(self.global_bucket, ChangeKinds.SITE, s.site_id)
        if loaded is None or order is None or site_body is None:
            return None
        site: Site = decode_entity(ChangeKinds.SITE, site_body)
        model: DeliveryTimeModel = loaded.model  # type: ignore[assignment]
        backlog = self.held.units.get(site.site_id, 0)
        (band,) = model.predict([site], order.lat, order.lon, s.carrier, order.placed_at, [backlog])
        start = order.placed_at
        return (
            start + timedelta(hours=band.p10),
            start + timedelta(hours=band.p50),
            start + timedelta(hours=band.p90),
        )

    def history(self, order: Order) -> CustomerHistory:
        """The customer's orders in this region up to and including `order`, oldest first."""
        past = []
        for order_id in self.customers.by_customer.get(order.customer_ref, ()):
            body = self.model.get(self.region_bucket, ChangeKinds.ORDER, order_id)
            if body is not None:
                o: Order = decode_entity(ChangeKinds.ORDER, body)
                if o.placed_at <= order.placed_at:
                    past.append(o)
        history = CustomerHistory()
        for o in sorted(past, key=lambda o: o.placed_at):
            history.add_order(o.placed_at, [(line.sku, self._category(line.sku)) for line in o.lines])
        return history

    def _category(self, sku: str) -> str:
        p = self._product(sku)
        return p.category if p else ""

    def risky_lines(self, order: Order, history: CustomerHistory) -> set[str]:
        """Skus of the order's lines likely enough to come back to deserve sizing help."""
        loaded = self.shelf.active("return_risk")
        if loaded is None:
            return set()
        facts = []
        for line in order.lines:
            p = self._product(line.sku)
            if p is not None:
                facts.append(
                    LineFacts(
                        sku=line.sku, category=p.category, unit_price=p.price, qty=line.qty, discount=0.0
                    )
                )
        model: ReturnRiskModel = loaded.model  # type: ignore[assignment]
        risks = model.predict(facts, history)
        return {f.sku for f, risk in zip(facts, risks, strict=True) if risk >= RETURN_RISK_NOTE}

    def recommendations(self, order: Order, history: CustomerHistory, at: datetime) -> list[Suggestion]:
        loaded = self.shelf.active("recommender")
        if loaded is None:
            return []
        ranker: RecommendationRanker = loaded.model  # type: ignore[assignment]
        anchors = [line.sku for line in order.lines]
        table: dict[str, list[tuple[str, float]]] = {}
        for sku in anchors:
            body = self.model.get(self.global_bucket, ChangeKinds.COPURCHASE, sku)
            if body is not None:
                row: CoPurchase = decode_entity(ChangeKinds.COPURCHASE, body)
                table[sku] = [(r.sku, r.score) for r in row.related]
        candidates = {s for rel in table.values() for s, _ in rel} | set(history.sku_count) | set(anchors)
        catalog: dict[str, tuple[str, float]] = {}
        names: dict[str, str] = {}
        for sku in candidates:
            p = self._product(sku)
            if p is not None:
                catalog[sku] = (p.category, p.price)
                names[sku] = p.name
        region = self.region_bucket.removeprefix("region:")
        sites = sum(
            1
            for body in list(self.model.table(self.global_bucket, ChangeKinds.SITE).values())
            if decode_entity(ChangeKinds.SITE, body).region == region
        )
        ctx = RecommendationContext(
            catalog=catalog,
            table=table,
            region_stock=self.stock.by_sku,
            region_sites=max(sites, 1),
            replenishment_days=ranker.replenishment_days,
        )
        ranked = ranker.rank(anchors, history, at, ctx, k=RECOMMENDATIONS + len(anchors))
        out = []
        for sku, _score in ranked:
            if not ctx.in_stock(sku):
                continue  # the ranker only scores in-stock candidates; this guards the promise
            category, price = catalog[sku]
            interval = ranker.replenishment_days.get(category)
            last = history.sku_last.get(sku)
            due = bool(interval and last and (at - last).total_seconds() / 86400 >= 0.8 * interval)
            if sku in anchors and not due:
                continue  # just bought: suggest it again only when it is due
            out.append(Suggestion(sku, names[sku], price, due))
            if len(out) == RECOMMENDATIONS:
                break
        return out
