"""Per-request helpers shared by the routes: the app's services and the headers every answer carries."""
from __future__ import annotations

from starlette.requests import Request

from ..routing.router import Route


def services(request: Request):
    return request.app.state.services


def route_headers(route: Route) -> dict[str, str]:
    h = {"X-Model": route.model}
    if route.provider:
        h["X-Provider"] = route.provider
        h["X-Provider-Endpoint"] = route.endpoint or ""
    if route.substitute:
        h["X-Provider-Substitute"] = "true"
    if route.ignored_params:
        h["X-Ignored-Parameters"] = ",".join(route.ignored_params)
    if route.attempts:
        h["X-Attempts"] = str(len(route.attempts))
        h["X-Route-Attempts"] = route.attempts_header()
    return h
