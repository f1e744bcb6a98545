"""The marketplace's pages, end to end in headless Chromium (Debian's, driven by Playwright).

One `viz serve`-equivalent server on loopback over a fresh catalogue on the tiny base; creator
cleo publishes through the page and with the real CLI (screening and all), consumers ada and bob
use the pages.
Screenshots of every page land in test-artifacts/screenshots/ (VIZ_TEST_ARTIFACTS overrides).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select

from viz.accounts import create_account
from viz.config import Settings
from viz.ledger import topup
from viz.store.database import open_database, session_scope
from viz.store.schema import AdapterVersion, ApiKey, UsageEvent
from viz.web.auth import set_password
from worlds.catalogue import add_tiny_base
from worlds.serving import run_server, settled

REPO = Path(__file__).resolve().parents[1]
SHOTS = Path(os.environ.get("VIZ_TEST_ARTIFACTS", REPO / "test-artifacts")) / "screenshots"
PASSWORDS = {"cleo": "cleo's long password", "ada": "ada's long password", "root": "root pw 123!"}
CHROMIUM_FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]

pytestmark = pytest.mark.skipif(
    os.environ.get("VIZ_TEST_BROWSER") == "0", reason="VIZ_TEST_BROWSER=0: browser tests skipped"
)


@pytest.fixture(scope="module")
def site(tmp_path_factory, tiny_model_folder) -> Iterator[dict[str, Any]]:  # type: ignore[no-untyped-def]
    from viz.app import create_app

    home = tmp_path_factory.mktemp("web-home")
    settings = Settings(home=home)
    database = open_database(settings.database_url_resolved)
    with session_scope(database) as session:
        for name in ("cleo", "ada", "root"):
            account = create_account(session, name, is_admin=name == "root")
            set_password(session, account, PASSWORDS[name])
        add_tiny_base(session, tiny_model_folder)
        topup(session, "ada", 5_000_000, transfer_id="ada-funds")
    env = {**os.environ, "VIZ_HOME": str(home), "VIZ_DATABASE_URL": settings.database_url_resolved}
    with run_server(create_app(settings, database)) as url:
        yield {"url": url, "env": env, "database": database, "home": home}
    database.dispose()


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    executable = os.environ.get("VIZ_TEST_CHROMIUM") or "/usr/bin/chromium"
    if not Path(executable).is_file():
        pytest.fail(
            f"no Chromium at {executable}: run scripts/chromium-test-browser (installs Debian's "
            "chromium) or set VIZ_TEST_BROWSER=0 to skip the browser tests"
        )
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=executable, args=CHROMIUM_FLAGS)
        yield chromium
        chromium.close()


def visitor(browser, site, **options):  # type: ignore[no-untyped-def]
    """A fresh browser profile (its own cookies) with the site as base URL."""
    context = browser.new_context(base_url=site["url"], **options)
    context.set_default_timeout(60_000)
    return context.new_page()


def log_in(page, name: str) -> None:  # type: ignore[no-untyped-def]
    page.goto("/login")
    page.get_by_label("Account name").fill(name)
    page.get_by_label("Password").fill(PASSWORDS[name])
    page.get_by_role("button", name="Log in").click()
    page.wait_for_url(re.compile(r"/dashboard/"))


def shot(page, name: str) -> None:  # type: ignore[no-untyped-def]
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=SHOTS / f"{name}.png", full_page=True)


def publish(site, folder: Path, name: str) -> None:  # type: ignore[no-untyped-def]
    command = [sys.executable, "-m", "viz.cli", "market", "publish", str(folder)]
    options = ["--account", "cleo", "--name", name, "--version", "1.0.0", "--licence", "MIT"]
    options += ["--price-in", "1000", "--price-out", "3000", "--base", "tiny", "--tag", "poetry"]
    options += ["--description", "writes short poems about rivers"]
    result = subprocess.run(
        [*command, *options], env=site["env"], capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr


@pytest.fixture(scope="module")
def published(site, tiny_model_folder, tmp_path_factory) -> str:  # type: ignore[no-untyped-def]
    from worlds.catalogue import make_tiny_adapter as make_adapter

    folder = make_adapter(
        tiny_model_folder, tmp_path_factory.mktemp("cleo") / "river-poems", seed=3
    )
    publish(site, folder, "river-poems")
    return "river-poems"


def fill_publish_form(page, weights: Path, folder: Path, name: str, price: int) -> None:  # type: ignore[no-untyped-def]
    """The publish page's required fields: `weights`, `folder`'s config, MIT, the tiny base."""
    page.get_by_label("Weights").set_input_files(weights)
    page.get_by_label("Config").set_input_files(folder / "adapter_config.json")
    page.get_by_label("Name").fill(name)
    page.get_by_label("Licence (SPDX)").fill("MIT")
    page.get_by_label("µ per 1k input tokens").fill(str(price))
    page.get_by_label("µ per 1k output tokens").fill(str(3 * price))
    page.get_by_label("Base model").select_option("tiny")


def test_a_creator_publishes_in_the_browser_and_sees_the_adapter(
    browser, site, tiny_model_folder, tmp_path
) -> None:
    from worlds.catalogue import make_tiny_adapter as make_adapter

    folder = make_adapter(tiny_model_folder, tmp_path / "river-songs", seed=5)
    page = visitor(browser, site)
    log_in(page, "cleo")

    page.get_by_role("link", name="Publish").click()
    fill_publish_form(page, folder / "adapter_model.safetensors", folder, "river-songs", 1000)
    page.get_by_label("Tags").fill("poetry, rivers")
    page.get_by_label("Description").fill("sings about rivers")
    shot(page, "publish")
    page.get_by_role("button", name="Screen and publish").click()

    page.wait_for_url(re.compile(r"/adapters/river-songs\?version=1.0.0"))
    assert page.get_by_text("Screening report: approved").is_visible()
    assert page.get_by_text(re.compile(r"Verified: entry \d+ is included")).is_visible()
    assert "1,000 µ per 1k input tokens" in page.inner_text("main")
    shot(page, "adapter")

    page.goto("/")
    page.get_by_label("Words").fill("river-songs")
    page.get_by_role("button", name="Search").click()
    assert page.get_by_role("heading", name="1 adapter").is_visible()
    shot(page, "catalogue")
    with page.expect_navigation():  # the dashboard loads before it is read (CI once read early)
        page.get_by_role("link", name="Earnings").click()
    page.locator("main").get_by_role("link", name="river-songs").wait_for(timeout=10_000)
    assert page.locator("main").get_by_role("link", name="river-songs").is_visible()
    shot(page, "creator-dashboard")


def test_a_pickle_uploaded_as_weights_is_refused_and_nothing_is_stored(
    browser, site, tiny_model_folder, tmp_path
) -> None:
    from worlds.catalogue import make_tiny_adapter as make_adapter

    folder = make_adapter(tiny_model_folder, tmp_path / "sneaky", seed=6)
    pickle = tmp_path / "adapter_model.safetensors"
    pickle.write_bytes(b"\x80\x04\x95" + b"\0" * 64)  # a pickle wearing the right name
    with session_scope(site["database"]) as session:
        versions_before = session.scalar(select(func.count()).select_from(AdapterVersion))
    page = visitor(browser, site)
    log_in(page, "cleo")
    page.goto("/publish")
    fill_publish_form(page, pickle, folder, "sneaky", 1)
    page.get_by_role("button", name="Screen and publish").click()

    assert "contains a pickle or zip archive" in page.inner_text("#error")
    assert page.get_by_label("Name").input_value() == "sneaky"  # the form keeps what was typed
    shot(page, "publish-refused")
    with session_scope(site["database"]) as session:
        assert session.scalar(select(func.count()).select_from(AdapterVersion)) == versions_before


def test_a_consumer_creates_a_key_uses_the_playground_and_sees_usage_and_balance_change(
    browser, site, published
) -> None:
    page = visitor(browser, site)
    log_in(page, "ada")
    balance_before = _micro(page.inner_text("#balance"))

    page.get_by_label("Label").fill("browser test")
    page.get_by_role("button", name="Create a key").click()
    key = page.inner_text("#new-key").strip()
    assert re.fullmatch(r"viz_[0-9a-f]{16}_[0-9a-f]{64}", key)
    shot(page, "consumer-new-key")
    page.reload()  # the secret is shown once: not on the next visit
    assert key not in page.content()

    page.goto(f"/playground?model={published}")
    page.get_by_label("Prompt").fill("Write about a river.")
    page.get_by_label("Most tokens to generate").fill("8")
    page.get_by_label("Your API key").fill(key)
    page.get_by_role("button", name="Send").click()
    assert page.get_by_role("heading", name=re.compile(f"Answer from {published}")).is_visible()
    shot(page, "playground")

    page.goto("/dashboard/ada/consumer")
    balance_after = _micro(page.inner_text("#balance"))
    with settled(site["database"]) as session:
        charged = session.scalar(select(func.sum(UsageEvent.charge)))
    assert charged and balance_after == balance_before - charged
    assert published in page.inner_text("#usage-per-adapter")
    shot(page, "consumer-dashboard")

    key_id = key.split("_")[1]
    with page.expect_navigation():  # the form posts, then the dashboard loads again
        page.get_by_role("button", name=f"Revoke key {key_id}").click()
    assert page.locator("tr", has_text=key_id).get_by_text("revoked").is_visible()
    page.goto(f"/playground?model={published}")
    page.get_by_label("Prompt").fill("Write about a river.")
    page.get_by_label("Your API key").fill(key)
    page.get_by_role("button", name="Send").click()
    assert "API key not accepted" in page.inner_text("#error")


def test_another_account_cannot_see_the_first_ones_dashboards(browser, site) -> None:
    bob = visitor(browser, site)
    bob.goto("/signup")
    bob.get_by_label("Account name").fill("bob")
    bob.get_by_label("Password").fill("bob's long password")
    bob.get_by_role("button", name="Create the account").click()
    bob.wait_for_url(re.compile(r"/dashboard/bob/consumer"))

    for dashboard in ("/dashboard/ada/consumer", "/dashboard/ada/creator"):
        response = bob.goto(dashboard)
        assert response is not None and response.status == 403
        assert "belongs to 'ada'" in bob.inner_text("main")
    shot(bob, "forbidden")
    response = bob.goto("/admin/takedowns")
    assert response is not None and response.status == 403

    stranger = visitor(browser, site)
    stranger.goto("/dashboard/ada/consumer")
    assert stranger.url.endswith("/login?next=/dashboard/ada/consumer")

    admin = visitor(browser, site)
    log_in(admin, "root")
    response = admin.goto("/admin/takedowns")
    assert response is not None and response.status == 200
    shot(admin, "admin-takedowns")


def test_a_form_posted_without_its_csrf_token_is_refused(browser, site) -> None:
    page = visitor(browser, site)
    log_in(page, "ada")
    with session_scope(site["database"]) as session:
        keys_before = session.scalar(select(func.count()).select_from(ApiKey))

    for form in ({"label": "forged"}, {"label": "forged", "csrf_token": "0" * 64}):
        response = page.request.post("/dashboard/ada/keys", form=form)
        assert response.status == 403
        assert "CSRF token is missing or stale" in response.text()
    # A page on another site that posts a form to Viz: refused, nothing created.
    attacker = visitor(browser, site)
    attacker.set_content(
        f'<form method="post" action="{site["url"]}/dashboard/ada/keys">'
        '<input name="label" value="forged"><button>go</button></form>'
    )
    with attacker.expect_navigation() as navigation:
        attacker.click("button")
    assert navigation.value is not None and navigation.value.status == 403

    with session_scope(site["database"]) as session:
        assert session.scalar(select(func.count()).select_from(ApiKey)) == keys_before


def test_wrong_passwords_are_refused_then_throttled(browser, site) -> None:
    page = visitor(browser, site)
    for attempt in range(6):
        page.goto("/login")
        page.get_by_label("Account name").fill("cleo")
        page.get_by_label("Password").fill(f"wrong password {attempt}")
        page.get_by_role("button", name="Log in").click()
        message = page.inner_text("[role=alert]")
        expected = "too many failed logins" if attempt == 5 else "wrong account name or password"
        assert expected in message


def test_pages_read_without_javascript_by_keyboard_and_at_phone_width(
    browser, site, published
) -> None:
    phone = visitor(
        browser, site, java_script_enabled=False, viewport={"width": 360, "height": 740}
    )
    for path, name in (
        ("/", "phone-catalogue"),
        (f"/adapters/{published}", "phone-adapter"),
        ("/log", "phone-log"),
    ):
        response = phone.goto(path)
        assert response is not None and response.status == 200
        width = phone.evaluate("document.documentElement.scrollWidth")
        assert width <= 360, f"{path} is {width}px wide at a 360px viewport"
        shot(phone, name)

    page = visitor(browser, site)
    page.goto("/")
    page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.textContent") == "Skip to content"
    page.keyboard.press("Enter")
    assert page.evaluate("document.activeElement.id") == "main"


def test_the_log_page_verifies_an_entry(browser, site, published) -> None:
    page = visitor(browser, site)
    page.goto("/log")
    page.get_by_label("Entry number").fill("0")
    page.get_by_role("button", name="Verify").click()
    assert page.get_by_text(re.compile(r"Entry 0: verified against the checkpoint")).is_visible()
    shot(page, "log")
    response = page.goto("/log?entry=9999")
    assert response is not None and response.status == 404


def _micro(text: str) -> int:
    return int(text.replace(",", "").replace("µ", "").strip())


def test_screenshots_are_kept(browser, site) -> None:
    """Runs last in this module: the screenshots the tests above took are all there."""
    taken = {p.stem for p in SHOTS.glob("*.png")}
    assert {"catalogue", "adapter", "playground", "consumer-dashboard", "log"} <= taken
