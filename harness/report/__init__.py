"""The static HTML report (see :mod:`harness.report.render`)."""

from harness.report.render import render_from_registry, render_site

__all__ = ["render_site", "render_from_registry"]
