"""The console in a real headless Chromium against the real stack (API, relay, matcher and
sender as processes, PostgreSQL, Kafka, a receiver): what an owner does when a hook breaks.

The tests share one browser, as one user's session would, but each stands alone (they run
in any order): `signed_in` signs the browser in when it is not, `hook` is a webhook made
through the API for the tests that only change one.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from selenium.common.exceptions import NoSuchElementException, StaleElementReferenceException
from selenium.webdriver.chrome.webdriver import WebDriver
from selenium.webdriver.common.action_chains import ActionChains
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.remote.webelement import WebElement
from selenium.webdriver.support.ui import Select, WebDriverWait

from tests.browser.chrome import chrome, replaced
from tests.browser.conftest import HOSTILE, ThreadedReceiver, api, post
from tests.e2e.conftest import Pipeline

pytestmark = [pytest.mark.e2e, pytest.mark.browser]

ORG = "browser-" + uuid.uuid4().hex[:8]


def webhook_active(stack: Pipeline, hook: str, token: str) -> bool:
    """Whether the API says the webhook is active (what a console action changed)."""
    active: bool = api(stack.api_url, "GET", f"/webhooks/{hook}", token=token)["active"]
    return active


@pytest.fixture(scope="module")
def token(stack: Pipeline) -> str:
    """An org token for ORG."""
    return str(api(stack.api_url, "POST", "/tokens", {"org": ORG, "name": "browser"})["token"])


@pytest.fixture(scope="module")
def hook(stack: Pipeline, token: str, receiver: ThreadedReceiver) -> str:
    """A push webhook on ORG/app, made through the API."""
    made = api(
        stack.api_url,
        "POST",
        f"/repos/{ORG}/app/webhooks",
        {"url": receiver.url("/made-by-api"), "events": ["push"]},
        token=token,
    )
    return str(made["id"])


def push(stack: Pipeline, token: str) -> None:
    """A push event on ORG/app, sent through the API."""
    api(
        stack.api_url,
        "POST",
        f"/repos/{ORG}/app/events",
        {"event": "push", "payload": {}},
        token=token,
    )


def button(driver: WebDriver, text: str, within: WebElement | None = None) -> WebElement:
    scope: Any = within or driver
    return scope.find_element(By.XPATH, f".//button[normalize-space()='{text}']")  # type: ignore[no-any-return]


def go(driver: WebDriver, element: WebElement, key: str | None = None) -> None:
    """Clicks (or presses `key` on) something that loads a page; waits for the new page."""
    old = driver.find_element(By.TAG_NAME, "html")
    if key is None:
        element.click()
    else:
        element.send_keys(key)
    wait = WebDriverWait(driver, 15, poll_frequency=0.1)
    wait.until(lambda _: replaced(old))
    wait.until(lambda d: d.execute_script("return document.readyState") == "complete")


def until(
    driver: WebDriver,
    check: Callable[[WebDriver], Any],
    *,
    refresh: bool = False,
    timeout: float = 30,
) -> Any:
    """Waits for `check` to find something, reloading the page between looks if asked."""

    def look(d: WebDriver) -> Any:
        try:
            found = check(d)
        except (NoSuchElementException, StaleElementReferenceException):
            found = None  # not there yet, or the page reloaded under the look
        if not found and refresh:
            d.refresh()
        return found

    return WebDriverWait(driver, timeout, poll_frequency=0.5).until(look)


UNLABELLED = """return [...document.querySelectorAll('input:not([type=hidden]), select, textarea')]
  .filter(e => !(e.labels && e.labels.length)).map(e => e.name || e.id)"""


def add_webhook(driver: WebDriver, base: str, url: str, *, events: tuple[str, ...] = ()) -> str:
    """Fills in the Add webhook form; returns the new webhook's id."""
    driver.get(f"{base}/console/orgs/{ORG}")
    go(driver, driver.find_element(By.LINK_TEXT, "Add webhook"))
    assert driver.execute_script(UNLABELLED) == []  # every field has its label
    driver.find_element(By.ID, "repo").send_keys("app")
    driver.find_element(By.ID, "url").send_keys(url)
    for event in events:
        driver.find_element(By.CSS_SELECTOR, f"input[name=events][value='{event}']").click()
    retry = driver.find_element(By.ID, "retry")
    retry.send_keys("1")
    go(driver, button(driver, "Add webhook"))
    assert "/console/webhooks/" in driver.current_url
    return driver.current_url.rsplit("/", 1)[1].split("?")[0]


def assert_fits_a_phone(browser: WebDriver) -> None:
    """At a phone's width (390 px) the page, reloaded, is no wider than the screen."""
    browser.set_window_size(390, 844)
    try:
        browser.refresh()
        wide = browser.execute_script(
            "return document.documentElement.scrollWidth - window.innerWidth"
        )
        assert wide <= 1
    finally:
        browser.set_window_size(1280, 900)


@pytest.fixture
def signed_in(browser: WebDriver, stack: Pipeline, token: str) -> str:
    """The browser signed in with ORG's token (whatever an earlier test left)."""
    browser.get(stack.api_url + "/console/")
    if browser.current_url.endswith("/console/login"):
        browser.find_element(By.ID, "token").send_keys(token)
        go(browser, button(browser, "Sign in"))
    assert browser.current_url.endswith(f"/console/orgs/{ORG}")
    return token


def test_sign_in(browser: WebDriver, stack: Pipeline, token: str) -> None:
    browser.delete_all_cookies()  # signed out, whatever ran before
    browser.get(stack.api_url + "/console/")
    assert browser.current_url.endswith("/console/login")
    field = browser.find_element(By.ID, "token")
    label = browser.find_element(By.CSS_SELECTOR, "label[for=token]")
    assert label.text == "Token"
    field.send_keys("hlt_wrong")
    go(browser, button(browser, "Sign in"))
    assert "not valid" in browser.find_element(By.ID, "login-error").text
    browser.find_element(By.ID, "token").send_keys(token)
    go(browser, button(browser, "Sign in"))
    assert browser.current_url.endswith(f"/console/orgs/{ORG}")
    assert button(browser, "Sign out").is_displayed()


def test_add_webhook_shows_the_secret_once_and_a_delivery_succeeds(
    browser: WebDriver, stack: Pipeline, receiver: ThreadedReceiver, signed_in: str
) -> None:
    add_webhook(browser, stack.api_url, receiver.url("/ok"))
    secret = browser.find_element(By.CSS_SELECTOR, "[data-secret]").text
    assert secret.startswith("whsec_")
    copy = button(browser, "Copy")
    assert copy.is_displayed()  # console.js ran under the CSP and revealed it
    copy.click()
    browser.refresh()
    assert not browser.find_elements(By.CSS_SELECTOR, "[data-secret]")
    assert secret not in browser.page_source
    assert browser.execute_script(UNLABELLED) == []  # the filters and recover form too

    push(stack, signed_in)
    row = until(
        browser, lambda d: d.find_element(By.CSS_SELECTOR, "tr.delivery.succeeded"), refresh=True
    )
    assert "✓" in row.text and row.find_element(By.CSS_SELECTOR, "td.http").text == "200"
    # A relative time, with the exact one in its title (shown on hover).
    when = row.find_element(By.TAG_NAME, "time")
    assert when.text == "just now" or when.text.endswith(" ago")
    assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC", when.get_attribute("title") or "")
    (got,) = receiver.at("/ok")
    assert got.signatures_valid(secret)

    # Readable at phone width: nothing wider than the screen.
    assert_fits_a_phone(browser)


def test_failing_endpoint_shows_cross_and_status_detail_is_inert_redeliver(
    browser: WebDriver, stack: Pipeline, receiver: ThreadedReceiver, signed_in: str
) -> None:
    hook_id = add_webhook(browser, stack.api_url, receiver.url("/fail"), events=("pull_request",))
    go(browser, button(browser, "Send test"))
    result = until(
        browser,
        lambda d: (
            "HTTP 500" in d.find_element(By.ID, "test").text and d.find_element(By.ID, "test")
        ),
    )
    assert "✗" in result.text

    api(
        stack.api_url,
        "POST",
        f"/repos/{ORG}/app/events",
        {"event": "pull_request.opened", "payload": {"number": 7}},
        token=signed_in,
    )
    browser.get(f"{stack.api_url}/console/webhooks/{hook_id}?event=pull_request")
    row = until(
        browser,
        lambda d: d.find_element(By.CSS_SELECTOR, "tr.delivery.dead"),
        refresh=True,
    )
    assert "✗" in row.text and row.find_element(By.CSS_SELECTOR, "td.http").text == "500"
    go(browser, row.find_element(By.TAG_NAME, "a"))

    body = browser.find_element(By.CSS_SELECTOR, "pre.response-body")
    assert body.text == HOSTILE  # shown as text...
    assert browser.execute_script("return window.pwned") is None  # ...and never run
    assert not browser.find_elements(By.CSS_SELECTOR, "img[src=x]")
    assert "http_status" in browser.page_source
    attempts = len(browser.find_elements(By.CSS_SELECTOR, "section.attempt"))
    assert attempts == 2  # retry schedule [1]: two attempts, then dead
    assert_fits_a_phone(browser)  # long headers and bodies wrap

    go(browser, button(browser, "Redeliver"))
    assert "Redelivery queued as attempt 3" in browser.find_element(By.CSS_SELECTOR, ".notice").text
    manual = until(
        browser,
        lambda d: (
            len(d.find_elements(By.CSS_SELECTOR, "section.attempt")) == 3
            and d.find_element(By.ID, "attempt-3")
        ),
        refresh=True,
    )
    assert "manual" in manual.text and "500" in manual.text


def test_disable_then_enable(
    browser: WebDriver, stack: Pipeline, signed_in: str, hook: str
) -> None:
    browser.get(f"{stack.api_url}/console/webhooks/{hook}")
    # By keyboard alone: Tab from the top of the page to Disable, then Enter.
    browser.find_element(By.TAG_NAME, "body").click()
    for _ in range(30):
        ActionChains(browser).send_keys(Keys.TAB).perform()
        if browser.switch_to.active_element.text == "Disable":
            break
    else:
        raise AssertionError("Disable is not reachable with the Tab key")
    go(browser, browser.switch_to.active_element, key=Keys.ENTER)
    banner = browser.find_element(By.CSS_SELECTOR, ".banner")
    assert "This webhook is disabled" in banner.text
    assert webhook_active(stack, hook, signed_in) is False
    go(browser, button(browser, "Enable", within=banner))
    assert not browser.find_elements(By.CSS_SELECTOR, ".banner")
    assert button(browser, "Disable").is_displayed()
    assert webhook_active(stack, hook, signed_in) is True


def test_a_form_without_its_csrf_token_is_refused(
    browser: WebDriver, stack: Pipeline, signed_in: str, hook: str
) -> None:
    browser.get(f"{stack.api_url}/console/webhooks/{hook}")
    form = button(browser, "Disable").find_element(By.XPATH, "./ancestor::form")
    browser.execute_script("arguments[0].querySelector('input[name=csrf]').remove()", form)
    go(browser, button(browser, "Disable"))
    assert "Refused" in browser.find_element(By.TAG_NAME, "h1").text
    assert webhook_active(stack, hook, signed_in) is True


def test_inbound_webhook_call_is_logged_then_refused_once_disabled(
    browser: WebDriver, stack: Pipeline, inbound_edge: str, signed_in: str
) -> None:
    browser.get(f"{stack.api_url}/console/orgs/{ORG}")
    go(browser, browser.find_element(By.LINK_TEXT, "Add inbound webhook"))
    assert browser.execute_script(UNLABELLED) == []
    browser.find_element(By.ID, "repo").send_keys("app")
    browser.find_element(By.ID, "name").send_keys("ci-failures")
    browser.find_element(By.ID, "target").send_keys("triage-agent")
    verify = Select(browser.find_element(By.ID, "verify"))
    assert verify.first_selected_option.get_attribute("value") == "secret_header"
    go(browser, button(browser, "Add inbound webhook"))

    secret = browser.find_element(By.CSS_SELECTOR, "[data-secret]").text
    assert secret.startswith("whsec_")
    url = browser.find_element(By.ID, "hook-url").text
    assert url.startswith(inbound_edge + "/hooks/in/ih_")
    assert button(browser, "Copy", within=browser.find_element(By.ID, "call")).is_displayed()
    curl = browser.find_element(By.ID, "curl").text
    assert url in curl and "$SECRET" in curl and secret not in curl

    # A real call, as a CI job would make it, to the URL the page shows.
    body = b'{"message":"Build 812 failed on main"}'
    proof = {"X-Webhook-Secret": secret, "Content-Type": "application/json"}
    status, answer = post(url, body, proof)
    assert status == 202, answer
    browser.refresh()
    assert not browser.find_elements(By.CSS_SELECTOR, "[data-secret]")  # shown once
    row = browser.find_element(By.CSS_SELECTOR, "tr.invocation.accepted")
    assert "✓" in row.text and answer["event_id"] in row.text
    assert row.find_element(By.CSS_SELECTOR, "td.http").text == "202"

    go(browser, button(browser, "Disable"))
    banner = browser.find_element(By.CSS_SELECTOR, ".banner")
    assert "This inbound webhook is disabled" in banner.text
    status, answer = post(url, body, proof)
    assert status == 403 and answer["error"]["code"] == "disabled"
    browser.refresh()
    refused = browser.find_element(By.CSS_SELECTOR, "tr.invocation.disabled")
    assert "✗" in refused.text and refused.find_element(By.CSS_SELECTOR, "td.http").text == "403"
    rows = browser.find_elements(By.CSS_SELECTOR, "tr.invocation")
    assert [r.get_attribute("class") for r in rows] == [
        "invocation disabled",
        "invocation accepted",
    ]  # newest first

    # Readable at phone width: the long URL and the curl example wrap, on the delete
    # confirmation too.
    assert_fits_a_phone(browser)
    go(browser, browser.find_element(By.LINK_TEXT, "Delete"))
    assert url in browser.find_element(By.CSS_SELECTOR, "code.url").text
    assert_fits_a_phone(browser)


@pytest.fixture(scope="module")
def scriptless() -> Iterator[WebDriver]:
    """A second Chromium, with JavaScript turned off."""
    driver = chrome(javascript=False)
    yield driver
    driver.quit()


def test_with_javascript_off_an_owner_signs_in_adds_a_hook_sees_it_deliver_and_disables_it(
    scriptless: WebDriver, stack: Pipeline, receiver: ThreadedReceiver, token: str
) -> None:
    """The README's promise that every page works without JavaScript, in a browser that
    runs none: sign-in, the add form, the secret shown once, the delivery log, Disable."""
    b = scriptless
    b.get(stack.api_url + "/console/")
    assert b.current_url.endswith("/console/login")
    b.find_element(By.ID, "token").send_keys(token)
    go(b, button(b, "Sign in"))
    assert b.current_url.endswith(f"/console/orgs/{ORG}")

    hook_id = add_webhook(b, stack.api_url, receiver.url("/no-js"))
    secret = b.find_element(By.CSS_SELECTOR, "[data-secret]").text
    assert secret.startswith("whsec_")
    assert not button(b, "Copy").is_displayed()  # console.js never ran to reveal it

    push(stack, token)
    row = until(b, lambda d: d.find_element(By.CSS_SELECTOR, "tr.delivery.succeeded"), refresh=True)
    assert row.find_element(By.CSS_SELECTOR, "td.http").text == "200"
    (got,) = receiver.at("/no-js")
    assert got.signatures_valid(secret)

    go(b, button(b, "Disable"))
    assert "This webhook is disabled" in b.find_element(By.CSS_SELECTOR, ".banner").text
    assert webhook_active(stack, hook_id, token) is False
