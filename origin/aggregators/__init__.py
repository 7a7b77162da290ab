"""Aggregator webhooks: EasyPost and AfterShip, in their own published formats.

`easypost.py` and `aftership.py` hold each provider's payload structs, signature check and
adapter; `mapping.py` the status tables; `ingest.py` the request flow and the one transaction
both share.
"""

from __future__ import annotations

from origin.aggregators.aftership import aftership_webhook
from origin.aggregators.easypost import easypost_webhook

__all__ = ["aftership_webhook", "easypost_webhook"]
