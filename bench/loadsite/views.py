"""The two baselines ``bench/load.py`` measures next to the app's send-code.

- ``HelloView``: the floor: DRF parses the JSON body and answers, nothing else.
- ``NaiveSendView``: what a hand-written integration often looks like: one ``requests.post``
  per request (a new connection each time), no number validation, no rate limits, no record.
"""

from __future__ import annotations

from typing import Any

import requests
from django.conf import settings
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView


class HelloView(APIView):
    def get(self, request: Request) -> Response:
        return Response({"hello": "world"})

    def post(self, request: Request) -> Response:
        data: Any = request.data
        return Response({"hello": data.get("phone_number", "world")})


class NaiveSendView(APIView):
    def post(self, request: Request) -> Response:
        data: Any = request.data
        number = data.get("phone_number")
        if not isinstance(number, str) or not number:
            return Response({"phone_number": ["This field is required."]}, status=400)
        # getattr: the bench's own settings are unknown to django-stubs' Settings.
        url, key = getattr(settings, "LOAD_TEXTFLOW_URL"), getattr(settings, "LOAD_TEXTFLOW_KEY")  # noqa: B009
        answer = requests.post(  # noqa: S113 - the naive way, as found in the wild
            f"{url}/send-code",
            json={"phone_number": number, "service_name": "Demo", "seconds": 600},
            headers={"Authorization": f"Bearer {key}"},
            timeout=10,
        )
        if answer.status_code != 200:
            return Response({"detail": "SMS provider error"}, status=502)
        expires = answer.json()["data"]["expires"]
        return Response({"phone_number": number, "expires": expires})
