"""Articles from URLs: a page fetched as safely as an image URL (shared.images.fetch_url: public
addresses only, timeouts, a size cap), then reduced to its main text by trafilatura (the article without
navigation, adverts or comments)."""

from __future__ import annotations

import httpx

from shared.config import Limits
from shared.errors import InvalidArticle, UnreachableUrl
from shared.images import fetch_url

PAGE_TYPES = ("text/html", "application/xhtml+xml", "text/plain")


async def fetch_page(url: str, limits: Limits) -> tuple[bytes, str]:
    """An article page's bytes and content type (a refused or failed URL: UrlRefused, as for images)."""

    async def read(response: httpx.Response) -> tuple[bytes, str]:
        if response.status_code != 200:
            raise UnreachableUrl(f"The URL answered HTTP {response.status_code}.", "http_error")
        content_type = response.headers.get("content-type", "").split(";")[0].strip().lower()
        if content_type not in PAGE_TYPES:
            raise InvalidArticle(f"The URL is not a web page or text (content type {content_type or 'missing'}).")
        body = bytearray()
        async for chunk in response.aiter_bytes():
            body += chunk
            if len(body) > limits.max_page_bytes:
                raise InvalidArticle(f"The page is over the limit of {limits.max_page_bytes / 2**20:.0f} MiB.")
        return bytes(body), response.headers.get("content-type", content_type)

    return await fetch_url(url, limits, "text/html,application/xhtml+xml,text/plain;q=0.9", read)


def page_text(body: bytes, content_type: str) -> str:
    """The article in a page: trafilatura's main text of HTML (paragraphs apart by a blank line, as the
    summarizer reads them), or plain text as it is."""
    if content_type.split(";")[0].strip().lower() == "text/plain":
        charset = content_type.partition("charset=")[2].split(";")[0].strip().strip('"') or "utf-8"
        try:
            return body.decode(charset, errors="replace")
        except LookupError:  # a charset Python does not know
            return body.decode("utf-8", errors="replace")
    import trafilatura  # its lxml stack only where pages are read

    text = trafilatura.extract(body, include_comments=False, include_tables=False, favor_precision=True)
    if not text:
        raise InvalidArticle("The page holds no article text to summarize.")
    return "\n\n".join(line.strip() for line in text.splitlines() if line.strip())
