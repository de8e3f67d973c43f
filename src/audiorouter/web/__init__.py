"""The web app served by `audiorouter serve`: the Playground and dashboard at / and /playground, and the API
docs (/docs Swagger UI, /redoc) from packaged assets. Every file ships in static/; nothing loads from
elsewhere, and each page carries a Content-Security-Policy that says so."""
from .pages import mount

__all__ = ["mount"]
