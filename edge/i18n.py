"""Languages of the shopper's page: English, German, French.

The language is chosen by `?lang=`, then the `wp_lang` cookie, then Accept-Language, then
English. Words come from the catalogs below; dates, times and "N minutes ago" are formatted for
the locale by Babel.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from functools import lru_cache
from zoneinfo import ZoneInfo

from babel.dates import format_skeleton, format_time, format_timedelta
from babel.numbers import format_currency
from cachetools import LRUCache
from starlette.requests import Request

LANGS = ("en", "de", "fr")
DEFAULT = "en"
COOKIE = "wp_lang"

STATUS: dict[str, dict[str, str]] = {
    "en": {
        "pending": "Label created",
        "info_received": "Shipping information received",
        "in_transit": "On its way",
        "out_for_delivery": "Out for delivery",
        "attempt_fail": "Delivery attempt failed",
        "available_for_pickup": "Ready for pickup",
        "delivered": "Delivered",
        "exception": "There is a problem with this delivery",
        "returned": "Returned to sender",
        "expired": "Tracking has expired",
    },
    "de": {
        "pending": "Versandetikett erstellt",
        "info_received": "Sendungsdaten übermittelt",
        "in_transit": "Unterwegs",
        "out_for_delivery": "In Zustellung",
        "attempt_fail": "Zustellversuch fehlgeschlagen",
        "available_for_pickup": "Zur Abholung bereit",
        "delivered": "Zugestellt",
        "exception": "Es gibt ein Problem mit dieser Zustellung",
        "returned": "An den Absender zurückgesandt",
        "expired": "Sendungsverfolgung abgelaufen",
    },
    "fr": {
        "pending": "Étiquette créée",
        "info_received": "Informations d'expédition reçues",
        "in_transit": "En route",
        "out_for_delivery": "En cours de livraison",
        "attempt_fail": "Tentative de livraison échouée",
        "available_for_pickup": "Prêt à être retiré",
        "delivered": "Livré",
        "exception": "Un problème est survenu avec cette livraison",
        "returned": "Retourné à l'expéditeur",
        "expired": "Le suivi a expiré",
    },
}

TEXT: dict[str, dict[str, str]] = {
    "en": {
        "skip": "Skip to the parcel status",
        "just_now": "just now",
        "tracking": "Tracking number",
        "carrier": "Carrier",
        "eta": "Estimated delivery",
        "eta_band": "most likely {p50}, between {p10} and {p90}",
        "updated": "Last carrier update",
        "timeline": "Journey",
        "no_events": "No carrier events yet.",
        "checked": "Information checked {ago}.",
        "stale": "We can't reach the carrier network right now. What you see was current {ago}.",
        "unlock_title": "See your order details",
        "unlock_help": "Enter the postcode of the delivery address to see the items and where they're going.",
        "postcode": "Postcode",
        "unlock": "Show details",
        "wrong_postcode": "That postcode doesn't match this parcel.",
        "throttled": "Too many attempts. Please try again in {minutes} minutes.",
        "order": "Your order",
        "items": "Items",
        "delivering_to": "Delivering to {city}",
        "returns": "Returns and exchanges",
        "language": "Language",
        "not_found_title": "We couldn't find that parcel",
        "not_found_body": "There is no shipment with the tracking number {number} yet. "
        "Check the number in your shipping e-mail; new parcels can take a few hours to appear.",
        "too_many_title": "Slow down a little",
        "too_many_body": "You've looked up many parcels in a short time. Please try again in a minute.",
        "qty": "Quantity",
        "recommended": "You might also like",
        "fit_help": "Not sure about the size? You can exchange it for free.",
        "due_again": "running low? It's about time to restock",
        "eta_model": "our estimate",
    },
    "de": {
        "skip": "Zum Sendungsstatus springen",
        "just_now": "gerade eben",
        "tracking": "Sendungsnummer",
        "carrier": "Versanddienstleister",
        "eta": "Voraussichtliche Zustellung",
        "eta_band": "wahrscheinlich {p50}, zwischen {p10} und {p90}",
        "updated": "Letzte Meldung des Versanddienstleisters",
        "timeline": "Sendungsverlauf",
        "no_events": "Noch keine Meldungen des Versanddienstleisters.",
        "checked": "Informationen geprüft {ago}.",
        "stale": "Wir erreichen das Versandnetz gerade nicht. Diese Angaben waren {ago} aktuell.",
        "unlock_title": "Bestelldetails anzeigen",
        "unlock_help": "Geben Sie die Postleitzahl der Lieferadresse ein, um Artikel und Lieferort zu sehen.",
        "postcode": "Postleitzahl",
        "unlock": "Details anzeigen",
        "wrong_postcode": "Diese Postleitzahl passt nicht zu dieser Sendung.",
        "throttled": "Zu viele Versuche. Bitte versuchen Sie es in {minutes} Minuten erneut.",
        "order": "Ihre Bestellung",
        "items": "Artikel",
        "delivering_to": "Lieferung nach {city}",
        "returns": "Rücksendung und Umtausch",
        "language": "Sprache",
        "not_found_title": "Wir konnten diese Sendung nicht finden",
        "not_found_body": "Es gibt noch keine Sendung mit der Nummer {number}. Prüfen Sie die Nummer "
        "in Ihrer Versandbestätigung; neue Sendungen erscheinen manchmal erst nach einigen Stunden.",
        "too_many_title": "Etwas langsamer, bitte",
        "too_many_body": "Sie haben in kurzer Zeit viele Sendungen abgefragt. Bitte versuchen Sie es "
        "in einer Minute erneut.",
        "qty": "Menge",
        "recommended": "Das könnte Ihnen auch gefallen",
        "fit_help": "Unsicher bei der Größe? Sie können kostenlos umtauschen.",
        "due_again": "bald aufgebraucht? Zeit zum Nachkaufen",
        "eta_model": "unsere Schätzung",
    },
    "fr": {
        "skip": "Aller au statut du colis",
        "just_now": "à l'instant",
        "tracking": "Numéro de suivi",
        "carrier": "Transporteur",
        "eta": "Livraison estimée",
        "eta_band": "probablement {p50}, entre {p10} et {p90}",
        "updated": "Dernière mise à jour du transporteur",
        "timeline": "Parcours",
        "no_events": "Aucun événement du transporteur pour l'instant.",
        "checked": "Informations vérifiées {ago}.",
        "stale": "Nous ne joignons pas le réseau du transporteur pour le moment. "
        "Ces informations étaient à jour {ago}.",
        "unlock_title": "Voir les détails de la commande",
        "unlock_help": "Saisissez le code postal de l'adresse de livraison pour voir les articles "
        "et la destination.",
        "postcode": "Code postal",
        "unlock": "Afficher les détails",
        "wrong_postcode": "Ce code postal ne correspond pas à ce colis.",
        "throttled": "Trop de tentatives. Réessayez dans {minutes} minutes.",
        "order": "Votre commande",
        "items": "Articles",
        "delivering_to": "Livraison à {city}",
        "returns": "Retours et échanges",
        "language": "Langue",
        "not_found_title": "Nous n'avons pas trouvé ce colis",
        "not_found_body": "Il n'existe pas encore d'envoi avec le numéro {number}. Vérifiez le numéro "
        "dans votre e-mail d'expédition ; un nouveau colis peut mettre quelques heures à apparaître.",
        "too_many_title": "Un peu moins vite",
        "too_many_body": "Vous avez consulté beaucoup de colis en peu de temps. Réessayez dans une minute.",
        "qty": "Quantité",
        "recommended": "Vous aimerez peut-être aussi",
        "fit_help": "Un doute sur la taille ? L'échange est gratuit.",
        "due_again": "bientôt épuisé ? C'est le moment de racheter",
        "eta_model": "notre estimation",
    },
}
LANG_NAMES = {"en": "English", "de": "Deutsch", "fr": "Français"}


def parse_accept_language(header: str) -> list[str]:
    """Primary language subtags in order of preference (q-values honoured)."""
    ranked: list[tuple[float, int, str]] = []
    for i, part in enumerate(header.split(",")):
        tag, _, params = part.strip().partition(";")
        q = 1.0
        if params.strip().startswith("q="):
            try:
                q = float(params.strip()[2:])
            except ValueError:
                q = 0.0
        if tag and q > 0:
            ranked.append((-q, i, tag.split("-")[0].lower()))
    return [tag for _, _, tag in sorted(ranked)]


def negotiate(request: Request) -> tuple[str, bool]:
    """(language, chosen explicitly by ?lang=) for this request."""
    return choose(
        request.query_params.get("lang", ""),
        request.cookies.get(COOKIE, ""),
        request.headers.get("accept-language", ""),
    )


def choose(asked: str, cookie: str, accept_language: str) -> tuple[str, bool]:
    """(language, chosen explicitly by ?lang=) from the query's `lang`, the `wp_lang` cookie and
    the Accept-Language header ("" for each one missing)."""
    if asked in LANGS:
        return asked, True
    if cookie in LANGS:
        return cookie, False
    return _from_accept_language(accept_language), False


@lru_cache(maxsize=1024)  # browsers send a handful of distinct headers
def _from_accept_language(header: str) -> str:
    for tag in parse_accept_language(header):
        if tag in LANGS:
            return tag
    return DEFAULT


class Translator:
    """Words, dates and relative times for one language and time zone."""

    def __init__(self, lang: str, tz: ZoneInfo, currency: str = "EUR") -> None:
        assert lang in LANGS, f"unsupported language {lang!r}"
        self.lang = lang
        self.tz = tz
        self.currency = currency
        self._text = TEXT[lang]
        self._ago: LRUCache[int, str] = LRUCache(maxsize=4096)

    def __call__(self, key: str, **values: object) -> str:
        return self._text[key].format(**values)

    def status(self, status: str) -> str:
        return STATUS[self.lang][status]

    def when(self, t: datetime) -> str:
        """A moment, e.g. "Thu, Nov 26, 21:57" / "Do., 26. Nov., 21:57"."""
        date = format_skeleton("MMMEd", t, tzinfo=self.tz, locale=self.lang)
        return f"{date}, {format_time(t, 'short', tzinfo=self.tz, locale=self.lang)}"

    def day(self, t: datetime) -> str:
        """A day, e.g. "Thursday, November 26" / "Donnerstag, 26. November"."""
        return format_skeleton("MMMMEEEEd", t, tzinfo=self.tz, locale=self.lang)

    def money(self, amount: float) -> str:
        return format_currency(amount, self.currency, locale=self.lang)

    def ago(self, seconds: float) -> str:
        """How long ago, counted in whole minutes ("just now" under one). It is asked on every
        page view and its words are part of the page's cache key, so each minute count is
        formatted once (Babel takes tens of microseconds)."""
        minutes = int(seconds // 60)
        text = self._ago.get(minutes)
        if text is None:
            if minutes < 1:
                text = self._text["just_now"]
            else:
                delta = timedelta(minutes=-minutes)
                text = format_timedelta(delta, add_direction=True, threshold=1.5, locale=self.lang)
            self._ago[minutes] = text
        return text
