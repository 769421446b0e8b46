"""The real daemon's /metrics page (the metrics on fakes: tests/unit/test_metrics.py)."""

import re

import requests


def test_live_metrics_count_http_requests(daemon):
    """The real daemon's /metrics counts requests by route (ids folded), method and code."""

    def requests_for(route, code):
        text = requests.get(daemon.url("/metrics"), verify=daemon.pem_path, timeout=10).text
        pattern = rf'imagefactory_http_requests_total{{code="{code}",method="GET",route="{re.escape(route)}"}} (\S+)'
        match = re.search(pattern, text)
        return float(match.group(1)) if match else 0.0

    before = requests_for("/imagefactory/builders/{id}/status", "404")
    for builder_id in ("a", "b", "c"):
        assert (
            requests.get(
                daemon.url(f"/imagefactory/builders/{builder_id}/status"), verify=daemon.pem_path, timeout=10
            ).status_code
            == 404
        )
    assert requests_for("/imagefactory/builders/{id}/status", "404") == before + 3
    page = requests.get(daemon.url("/metrics"), verify=daemon.pem_path, timeout=10)
    assert page.headers["content-type"].startswith("text/plain")
    assert "imagefactory_event_outbox_length" in page.text
