"""Headless Chromium from Debian's packages (`chromium`, `chromium-driver`), via selenium.

Selenium is pointed at the system driver and browser, so it never tries to download one
(the machines are offline).
"""

from __future__ import annotations

import shutil

from selenium import webdriver
from selenium.common.exceptions import StaleElementReferenceException, WebDriverException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.remote.webelement import WebElement

CANDIDATES = {
    "browser": ("chromium", "chromium-browser", "google-chrome"),
    "driver": ("chromedriver",),
}


def _which(kind: str) -> str:
    for name in CANDIDATES[kind]:
        found = shutil.which(name) or (
            shutil.which(name, path="/usr/lib/chromium") if kind == "driver" else None
        )
        if found:
            return found
    raise RuntimeError(
        f"no {kind} found ({', '.join(CANDIDATES[kind])}): run `make browser` "
        "(apt-get install chromium chromium-driver)"
    )


def chrome(width: int = 1280, height: int = 900, *, javascript: bool = True) -> webdriver.Chrome:
    """A fresh headless Chromium; chromedriver gives it a temporary profile of its own.
    With `javascript=False` no page script runs (the driver's own `execute_script` still
    does, for the tests' waits)."""
    options = webdriver.ChromeOptions()
    if not javascript:
        options.add_experimental_option(
            "prefs", {"profile.managed_default_content_settings.javascript": 2}
        )
    options.binary_location = _which("browser")
    for arg in (
        "--headless=new",
        "--no-sandbox",  # CI runs as root
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--no-first-run",
        "--disable-extensions",
        f"--window-size={width},{height}",
    ):
        options.add_argument(arg)
    driver = webdriver.Chrome(options=options, service=Service(executable_path=_which("driver")))
    driver.set_page_load_timeout(30)
    return driver


def replaced(element: WebElement) -> bool:
    """Whether `element`'s page was replaced (a wait after a click that loads a page).
    Chromium answers a look at a node of the old document with a stale-element error or,
    now and then, a plain one saying the node "does not belong to the document"."""
    try:
        element.is_enabled()
    except StaleElementReferenceException:
        return True
    except WebDriverException as exc:
        if "does not belong to the document" in str(exc):
            return True
        raise
    return False
