"""Sends events through `pytt-events-api` (PyPI), used as its documentation shows, with only
its base URL changed: its batch call (`post_events_in_bulk`) and its single call.

Run by tests/test_relay_client.py with the interpreter of `.venv-clients/` (its pinned
pydantic 1 and full phonenumbers stay out of the gateway's environment).
Usage: pytt_send.py BASE_URL ACCESS_TOKEN PIXEL_CODE
"""

import datetime
import sys

from pytt_events.auth import TikTokAuth
from pytt_events.context import Ad, Context, Page, User
from pytt_events.event import Event
from pytt_events.properties import Content, Properties
from pytt_events.tiktok_events_api import TikTokEventsApi

base, token, pixel = sys.argv[1:4]
auth = TikTokAuth(TIKTOK_ACCESS_TOKEN=token, TIKTOK_PIXEL_ID=pixel)
api = TikTokEventsApi()
api.ROOT = base + "/open_api/"  # the one change a user makes: TikTok's host → the gateway


def event(number: int) -> Event:
    return Event(
        pixel_code=pixel,
        event="CompletePayment",
        event_id=f"pytt-{number}",
        timestamp=datetime.datetime.now(datetime.UTC),
        context=Context(
            user=User(email="Alice@Example.com", phone_number="+1 213 373 4253"),
            page=Page(url=f"https://shop.example/p/{number}"),
            ad=Ad(callback=f"E.C.P.pytt{number}"),
            ip="203.0.113.9",
            user_agent="Mozilla/5.0 pytt",
        ),
        properties=Properties(
            currency="USD",
            value=19.0,
            contents=[Content(content_id="SKU_1", quantity=2, price=9.5)],
        ),
    )


api.post_events_in_bulk([event(1), event(2)], auth)  # raises on a code other than 0
api.post_event(event(3), auth)
print("sent")
