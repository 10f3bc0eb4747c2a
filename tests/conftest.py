from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Iterator
from decimal import Decimal
from pathlib import Path

import pytest

from tests.imagefactory import image_bytes


@pytest.fixture(autouse=True)
def _media_root(settings: pytest.FixtureRequest, tmp_path: Path) -> Path:
    """Every test writes media into its own folder."""
    media = tmp_path / "media"
    media.mkdir()
    settings.MEDIA_ROOT = media  # type: ignore[attr-defined]
    return media


@pytest.fixture(autouse=True)
def _space_states_forgotten() -> Iterator[None]:
    """Tests empty the tables between them; the per-process memos of written space states and of active versions
    must follow."""
    from django.apps import apps

    if not apps.is_installed("search"):  # the catalogue's tests without search (test_catalog_without_search)
        yield
        return
    from search.indexing import versions
    from search.querying.active import active_forget

    versions.space_states_forget()
    active_forget()
    yield
    versions.space_states_forget()
    active_forget()


@pytest.fixture
def make_product(db: None) -> Callable[..., object]:
    from catalog import services

    def make(
        title: str = "Blue shirt",
        *,
        images: int = 1,
        category: object = None,
        price: Decimal | None = Decimal("19.90"),
        stock: int = 5,
        **kwargs: object,
    ) -> object:
        product = services.product_create(title=title, category=category, price=price, stock=stock, **kwargs)
        for i in range(images):
            services.product_image_add(product=product, file=image_bytes(color=(40 * i % 256, 90, 160)))
        return product

    return make


@pytest.fixture
def staff_client(client, django_user_model):  # type: ignore[no-untyped-def]
    user = django_user_model.objects.create_user(
        "staff", "staff@example.com", "pw-staff-123", is_staff=True, is_superuser=True
    )
    client.force_login(user)
    return client


# --- browser tests (Debian's Chromium driven by Playwright) ----------------------------------------

CHROMIUM = os.environ.get("VITRINE_CHROMIUM", "/usr/bin/chromium")


@pytest.fixture(scope="session")
def browser() -> Iterator[object]:
    if not shutil.which(CHROMIUM):
        if os.environ.get("CI"):
            pytest.fail(f"browser tests need Chromium at {CHROMIUM} (apt-get install chromium)")
        pytest.skip(f"Chromium not found at {CHROMIUM}; apt-get install chromium to run browser tests")
    # Playwright's sync API runs an event loop in this thread; the ORM calls our tests make
    # around it are still plain synchronous code.
    os.environ.setdefault("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM,
            args=[
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-background-networking",
                "--disable-component-update",
                "--no-first-run",
                "--disable-sync",
            ],
        )
        yield browser
        browser.close()


@pytest.fixture
def page(browser, live_server):  # type: ignore[no-untyped-def]
    context = browser.new_context(base_url=live_server.url, viewport={"width": 1200, "height": 900})
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    yield page
    context.close()
    assert not errors, f"JavaScript errors: {errors}"


@pytest.fixture
def screenshot(settings, request) -> Callable[..., Path]:  # type: ignore[no-untyped-def]
    """Save a full-page screenshot as a test artifact (``$VITRINE_HOME/artifacts/screenshots``)."""
    folder = Path(os.environ.get("VITRINE_TEST_ARTIFACTS", Path(settings.VITRINE_HOME) / "artifacts")) / "screenshots"

    def take(page, name: str) -> Path:  # type: ignore[no-untyped-def]
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"{request.node.name}-{name}.png"
        page.screenshot(path=str(path), full_page=True)
        return path

    return take
