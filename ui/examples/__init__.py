"""Example articles offered in the UI (see README.md beside this file for where they come from)."""

from importlib.resources import files

APOLLO_11 = files(__name__).joinpath("apollo11.txt").read_text(encoding="utf-8").strip()
SOURDOUGH = files(__name__).joinpath("sourdough.txt").read_text(encoding="utf-8").strip()

ARTICLES: dict[str, str] = {
    "Apollo 11 lands (the Ray Serve tutorial's article)": APOLLO_11,
    "A sourdough starter revived": SOURDOUGH,
}
