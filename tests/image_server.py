"""A small HTTP server on 127.0.0.1 for URL tests: real photos plus misbehaving endpoints."""

from __future__ import annotations

import html
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from ui.examples import APOLLO_11

SEED_DIR = Path(__file__).resolve().parent.parent / "backend" / "gallery_seed"
# URL path prefix -> folder served: the gallery seed's photos, and the photos tests query with.
FOLDERS = {"/photos/": SEED_DIR, "/fixtures/": Path(__file__).resolve().parent / "fixtures" / "photos"}


# Around an article, what a news site puts there too: what reducing a page to its text must leave out.
SITE_MENU = "Home World Sports Weather Subscribe Sign in"
SITE_FOOTER = "Copyright 2026 The Daily Example. All rights reserved. Privacy policy. Cookie settings."


def news_page(article: str) -> str:
    """`article` as a news site serves it: in an <article>, between a menu, a sidebar and a footer."""
    paragraphs = "".join(f"<p>{html.escape(p)}</p>" for p in article.split("\n\n"))
    return (
        "<!doctype html><html><head><title>Men walk on moon</title></head><body>"
        f"<header><nav>{' '.join(f'<a href=/{w}>{w}</a>' for w in SITE_MENU.split())}</nav></header>"
        f"<main><article><h1>Men walk on moon</h1>{paragraphs}</article></main>"
        "<aside><h2>Most read</h2><ul><li><a href=/a>Ten recipes for sourdough</a></li></ul></aside>"
        f"<footer><p>{SITE_FOOTER}</p></footer></body></html>"
    )


class QuietHandler(BaseHTTPRequestHandler):
    """A test server's request handler: logs nothing, answers whole bodies with `reply`."""

    def log_message(self, *_):  # quiet
        pass

    def reply(self, status: int, body: bytes, content_type: str, extra: dict | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for key, value in (extra or {}).items():
            self.send_header(key, value)
        self.end_headers()
        self.wfile.write(body)


class Handler(QuietHandler):
    def do_GET(self) -> None:  # noqa: N802
        path = self.path.split("?")[0]
        prefix = next((prefix for prefix in FOLDERS if path.startswith(prefix)), None)
        if prefix:
            file = FOLDERS[prefix] / path.removeprefix(prefix)
            if file.is_file():
                kind = "image/png" if file.suffix == ".png" else "image/jpeg"
                return self.reply(200, file.read_bytes(), kind)
            return self.reply(404, b"not found", "text/plain")
        if path == "/redirect-to-photo":
            return self.reply(302, b"", "text/plain", {"Location": "/photos/dog-on-porch.jpg"})
        if path == "/redirect-to-metadata":
            return self.reply(302, b"", "text/plain", {"Location": "http://169.254.169.254/latest/meta-data/"})
        if path == "/redirect-loop":
            return self.reply(302, b"", "text/plain", {"Location": "/redirect-loop"})
        if path == "/not-an-image":
            return self.reply(200, b"<html>hello</html>", "text/html")
        if path == "/news/apollo-11.html":
            return self.reply(200, news_page(APOLLO_11).encode(), "text/html; charset=utf-8")
        if path == "/lying-image":
            return self.reply(200, b"this is not a jpeg at all", "image/jpeg")
        if path == "/slow":
            time.sleep(30)
            return self.reply(200, b"", "image/jpeg")
        if path == "/endless":
            self.send_response(200)
            self.send_header("Content-Type", "image/jpeg")
            self.end_headers()
            try:
                for _ in range(10_000):  # bounded: ~640 MB at most, the client stops far earlier
                    self.wfile.write(b"\xff" * 65536)
            except OSError:
                pass
            return None
        return self.reply(404, b"not found", "text/plain")


class ImageServer:
    def __init__(self) -> None:
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> ImageServer:
        self.thread.start()
        return self

    def __exit__(self, *_) -> None:
        self.server.shutdown()
        self.server.server_close()
