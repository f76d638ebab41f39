"""The report pages under /ui: server-rendered HTML and SVG (docs/pages.md)."""
