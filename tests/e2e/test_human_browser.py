"""The labeling app in a real headless Chromium (Debian's package, driven by Selenium), while a
training stage runs and consumes the labels. Install: apt-get install -y chromium chromium-driver."""
from __future__ import annotations

import sqlite3
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
import yaml

from frl_plugins.rewards.human.app import spawn
from frl_plugins.rewards.human.store import LabelStore

CHROMIUM, DRIVER = Path("/usr/bin/chromium"), Path("/usr/bin/chromedriver")
pytestmark = [pytest.mark.browser,
              pytest.mark.skipif(not CHROMIUM.exists() or not DRIVER.exists(),
                                 reason="needs Debian's chromium and chromium-driver")]
webdriver = pytest.importorskip("selenium.webdriver")
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402

XSS_A = '<script>window.__pwned = "script"</script>'
XSS_B = '<img src=x onerror="window.__pwned = \'img\'">'


@pytest.fixture
def browser():
    opts = webdriver.ChromeOptions()
    opts.binary_location = str(CHROMIUM)
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-dev-shm-usage"):
        opts.add_argument(flag)
    driver = webdriver.Chrome(options=opts, service=webdriver.ChromeService(executable_path=str(DRIVER)))
    driver.set_script_timeout(20)
    yield driver
    driver.quit()


def start_trainer(tmp_path: Path, db: Path) -> subprocess.Popen:
    path = tmp_path / "browser.yaml"
    path.write_text(yaml.safe_dump({
        "name": "browser", "output_dir": str(tmp_path / "runs"),
        "model": {"path": "builtin:tiny-gpt2", "tiny": {"n_layer": 1, "n_embd": 32, "n_head": 2}},
        "stages": [{
            "name": "dpo", "optimizer": {"type": "dpo"},
            "data": {"train": {"generator": "addition", "split": "train"}},
            "rewards": {"sources": [{"name": "people", "type": "human", "db": str(db), "per_step": 4}]},
            "rollout": {"num_generations": 2, "max_new_tokens": 3},
            "train": {"steps": 100000, "batch_size": 4, "lr": 1e-4},
        }],
    }))
    return subprocess.Popen([sys.executable, "-m", "feedback_rl.commands.cli", "train", str(path), "--no-progress"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def wait_for(predicate, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if value := predicate():
            return value
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def test_label_ten_items_by_keyboard_while_training_consumes_them(tmp_path, browser):
    db = tmp_path / "labels.sqlite"
    store = LabelStore(db)
    token = store.add_annotator("browser")
    xss = store.enqueue("pairwise", "1+1=", XSS_A, XSS_B)  # the first item served
    con = sqlite3.connect(db, timeout=30)
    server, url = spawn(db)
    trainer = start_trainer(tmp_path, db)
    try:
        # without a token: 401 for the page and the API, from a plain client and from the browser
        with pytest.raises(urllib.error.HTTPError) as e:
            urllib.request.urlopen(url + "/api/next", timeout=10)
        assert e.value.code == 401
        browser.get(url + "/")
        assert "401" in browser.find_element(By.TAG_NAME, "body").text

        wait_for(lambda: con.execute("SELECT COUNT(*) FROM items").fetchone()[0] >= 10, 240,
                 "the trainer to enqueue items")
        browser.get(f"{url}/?token={token}")
        status = lambda: browser.find_element(By.ID, "status").text  # noqa: E731
        wait_for(lambda: status() == f"Item {xss}", 20, "the first item")

        # model output shows as text and runs nothing
        assert browser.find_element(By.ID, "a").text == XSS_A
        assert browser.find_element(By.ID, "b").text == XSS_B
        assert browser.find_elements(By.CSS_SELECTOR, "#item img, #item script") == []
        assert browser.execute_script("return window.__pwned === undefined")
        anon = browser.execute_async_script(
            "const done = arguments[0]; fetch('/api/next', {credentials: 'omit'}).then(r => done(r.status));")
        assert anon == 401

        pressed = []
        body = browser.find_element(By.TAG_NAME, "body")
        for k in range(10):
            shown = wait_for(lambda: status().startswith("Item ") and status(), 30, "an item")
            item_id = int(shown.split()[1])
            key = "12"[k % 2]
            body.send_keys(key)
            pressed.append((item_id, "a" if key == "1" else "b"))
            wait_for(lambda: status() != shown, 30, "the next item after a key press")
        assert browser.execute_script("return window.__pwned === undefined")
        assert int(browser.find_element(By.ID, "mine").text) == 10

        rows = con.execute("SELECT item_id, choice FROM labels WHERE annotator='browser' ORDER BY id").fetchall()
        assert rows == pressed
        ids = {r[0] for r in con.execute("SELECT id FROM labels WHERE annotator='browser'")}
        wait_for(lambda: ids <= {r[0] for r in con.execute("SELECT label_id FROM consumed")}, 120,
                 "the running training stage to consume the 10 labels")
        assert trainer.poll() is None  # still training
    finally:
        trainer.kill()
        server.terminate()
        server.wait(10)


def test_a_conversation_shows_turn_by_turn_as_text(tmp_path, browser):
    db = tmp_path / "labels.sqlite"
    store = LabelStore(db)
    token = store.add_annotator("browser")
    turns = [{"role": "system", "content": XSS_A}, {"role": "<b>user</b>", "content": "What is 2+2?\n" + XSS_B}]
    item = store.enqueue("thumbs", "<|system|>rendered", "4", meta={"turns": turns})
    server, url = spawn(db)
    try:
        browser.get(f"{url}/?token={token}")
        wait_for(lambda: browser.find_element(By.ID, "status").text == f"Item {item}", 20, "the item")
        shown = browser.find_elements(By.CSS_SELECTOR, "#prompt .turn")
        assert [t.find_element(By.CLASS_NAME, "role").text for t in shown] == ["SYSTEM", "<B>USER</B>"]  # CSS capitals
        assert [t.find_element(By.TAG_NAME, "pre").text for t in shown] == [XSS_A, "What is 2+2?\n" + XSS_B]
        assert browser.find_elements(By.CSS_SELECTOR, "#item img, #item script, #item b") == []
        assert browser.execute_script("return window.__pwned === undefined")
        assert "rendered" not in browser.find_element(By.ID, "prompt").text   # the turns, not the template's text
    finally:
        server.terminate()
        server.wait(10)
