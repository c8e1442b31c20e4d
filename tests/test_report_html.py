"""`regionshards report`: one offline HTML page; every image embedded, decodable, and rendered by a browser."""

from __future__ import annotations

import base64
import binascii
import io
import re
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import pytest
from click.testing import CliRunner
from PIL import Image

from regionshards.cli.main import main
from regionshards.report.html import CSP, write_report
from regionshards.report.plots import render_plots
from regionshards.report.stats import compute_stats
from test_report_eval import hand_dataset


class _Page(HTMLParser):
    """Every tag with its attributes, and the text of table headers."""

    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.headers: list[str] = []
        self._in_th = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))
        self._in_th = tag == "th"

    def handle_data(self, data: str) -> None:
        if self._in_th:
            self.headers.append(data)
            self._in_th = False


def _decode_data_uri(uri: str) -> Image.Image:
    m = re.fullmatch(r"data:(image/(?:png|jpeg));base64,([A-Za-z0-9+/=]+)", uri)
    assert m, uri[:60]
    try:
        data = base64.b64decode(m.group(2), validate=True)
    except binascii.Error as exc:  # pragma: no cover - reported by the assertion below
        raise AssertionError(f"bad base64 in {uri[:60]}") from exc
    img = Image.open(io.BytesIO(data))
    img.load()
    assert img.format == {"image/png": "PNG", "image/jpeg": "JPEG"}[m.group(1)]
    return img


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    tmp = tmp_path_factory.mktemp("report")
    ds, ann = hand_dataset(tmp)
    return write_report(ds, tmp / "out" / "report.html", annotations=ann, overlays=2, seed=1,
                        filter_name="ratio3"), ds


def test_every_image_is_embedded_and_decodes(report: tuple[Path, Path]) -> None:
    page_path, ds = report
    page = _Page()
    page.feed(page_path.read_text(encoding="utf-8"))
    images = [attrs for tag, attrs in page.tags if tag == "img"]
    assert len(images) == len(render_plots(compute_stats(ds))) + 2  # the histograms and two overlays
    sizes = [_decode_data_uri(attrs["src"] or "").size for attrs in images]
    assert all(w > 100 and h > 100 for w, h in sizes)
    assert all(attrs.get("alt") for attrs in images)
    # Nothing else is loaded: no scripts, stylesheets, frames or links to fetch, and a policy that forbids them.
    assert not [t for t, _ in page.tags if t in ("script", "link", "iframe", "object", "embed")]
    assert not [a for _, a in page.tags for k, v in a.items() if k in ("src", "href") and not (v or "").startswith(
        "data:")]
    csp = [a for t, a in page.tags if t == "meta" and a.get("http-equiv") == "Content-Security-Policy"]
    assert csp and csp[0]["content"] == CSP
    for header in ("recall@0.5", "recall@0.7", "ABO", "median", "p95", "histogram (0.1 bins)"):
        assert header in page.headers, header


def test_report_without_annotations_or_overlays(tmp_path: Path, tiny_dataset: Path) -> None:
    path = write_report(tiny_dataset, tmp_path / "r.html", overlays=0)
    text = path.read_text(encoding="utf-8")
    assert "Evaluation against" not in text and "<h2>Samples</h2>" not in text
    assert "images: 8 inputs = 6 ok + 2 failed (empty: 1, not-an-image: 1)" in text


_PROBE = ("<script>window.addEventListener('load', () => { const imgs = Array.from(document.images);"
          " const ok = imgs.filter(i => i.complete && i.naturalWidth > 0).length;"
          " document.documentElement.setAttribute('data-probe',"
          " ok + '/' + imgs.length + '/' + performance.getEntriesByType('resource').length); });</script>")


def _chromium_probe(chromium: str, page: Path, tmp: Path) -> tuple[int, int, int]:
    """(images rendered, images, resources fetched) of ``page`` opened from a file:// URL in headless Chromium.
    The probe script goes before the page's own Content-Security-Policy (which allows no script after it)."""
    probe = tmp / f"probe-{page.name}"
    probe.write_text(page.read_text(encoding="utf-8").replace("<head>", "<head>" + _PROBE, 1), encoding="utf-8")
    out = subprocess.run(
        [chromium, "--headless=new", "--disable-gpu", "--no-sandbox", "--disable-dev-shm-usage",
         f"--user-data-dir={tmp / 'profile'}", "--virtual-time-budget=10000", "--dump-dom", probe.as_uri()],
        capture_output=True, text=True, timeout=120, check=False,
    )
    m = re.search(r'data-probe="(\d+)/(\d+)/(\d+)"', out.stdout)
    assert m, f"chromium gave no probe result (exit {out.returncode}): {out.stderr[-2000:]}"
    return int(m.group(1)), int(m.group(2)), int(m.group(3))


def test_report_renders_in_headless_chromium(report: tuple[Path, Path], tmp_path: Path) -> None:
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        pytest.skip("headless Chromium not found (Debian package `chromium`, which .ci/run installs when it can); "
                    "test_every_image_is_embedded_and_decodes still checks every image")
    page_path, _ = report
    n_img = page_path.read_text(encoding="utf-8").count("<img ")
    assert _chromium_probe(chromium, page_path, tmp_path) == (n_img, n_img, 0)
    # The probe can tell: a page with a corrupt embedded image reports it as not rendered.
    broken = tmp_path / "broken.html"
    good = page_path.read_text(encoding="utf-8")
    first = good.index("data:image/png;base64,") + len("data:image/png;base64,")
    broken.write_text(good[:first] + "AAAA" + good[first + 4:], encoding="utf-8")
    assert _chromium_probe(chromium, broken, tmp_path) == (n_img - 1, n_img, 0)


def test_report_command(tmp_path: Path) -> None:
    ds, ann = hand_dataset(tmp_path)
    out = tmp_path / "r" / "page.html"
    result = CliRunner().invoke(main, ["report", str(ds), "--out", str(out), "--annotations", str(ann),
                                       "--sample", "1"])
    assert result.exit_code == 0, result.output
    assert result.output.strip() == f"wrote {out}" and "<h3>Proposals</h3>" in out.read_text(encoding="utf-8")
    result = CliRunner().invoke(main, ["report", str(ds), "--out", str(out), "--filter", "nope"])
    assert result.exit_code == 1 and "unknown filter 'nope'" in result.output


def test_the_summary_text_wraps_instead_of_overflowing_the_page(report: tuple[Path, Path]) -> None:
    page = report[0].read_text(encoding="utf-8")
    assert "<pre>" in page
    style = re.search(r"<style>(.*?)</style>", page, re.S).group(1)
    rule = re.search(r"(?:^|})\s*pre\{([^}]*)\}", style)
    assert rule, "no rule for <pre>: a long summary line would widen the page beyond the viewport"
    assert "white-space:pre-wrap" in rule.group(1) and "overflow-wrap:anywhere" in rule.group(1)
