"""Scraping a prometheus_client registry the way Prometheus would, for the metrics tests."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

Labels = tuple[tuple[str, str], ...]
Samples = dict[tuple[str, Labels], float]


def scrape(registry: CollectorRegistry) -> Samples:
    """Every sample of one scrape of `registry`'s text exposition, by name and sorted labels."""
    text = generate_latest(registry).decode()
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def labels(**pairs: str) -> Labels:
    return tuple(sorted(pairs.items()))
