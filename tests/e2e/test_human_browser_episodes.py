"""The labeling page shows an episode turn by turn on each side (the model's turns and the environment's, with
their roles), as text only, in a real headless Chromium. Install: apt-get install -y chromium chromium-driver."""
from __future__ import annotations

from test_human_browser import XSS_A, XSS_B, browser, pytestmark, wait_for  # noqa: F401 - the fixture and marks

from frl_plugins.rewards.human.app import spawn
from frl_plugins.rewards.human.store import LabelStore
from selenium.webdriver.common.by import By

CALL = '<tool_call>{"name": "calculate", "arguments": {"expression": "6*7"}}</tool_call>'


def test_an_episode_shows_turn_by_turn_on_each_side(tmp_path, browser):  # noqa: F811
    db = tmp_path / "labels.sqlite"
    store = LabelStore(db)
    token = store.add_annotator("browser")
    a_turns = [{"role": "assistant", "content": CALL}, {"role": "tool", "content": XSS_A},
               {"role": "assistant", "content": "42"}]
    b_turns = [{"role": "assistant", "content": "41" + XSS_B}]
    item = store.enqueue("pairwise", "What is 6*7?", "[assistant] transcript A", "[assistant] transcript B",
                         meta={"a_turns": a_turns, "b_turns": b_turns})
    server, url = spawn(db)
    try:
        browser.get(f"{url}/?token={token}")
        wait_for(lambda: browser.find_element(By.ID, "status").text == f"Item {item}", 20, "the item")
        for side, turns in (("a", a_turns), ("b", b_turns)):
            shown = browser.find_elements(By.CSS_SELECTOR, f"#{side} .turn")
            assert [t.find_element(By.CLASS_NAME, "role").text for t in shown] == [t["role"].upper() for t in turns]
            assert [t.find_element(By.TAG_NAME, "pre").text for t in shown] == [t["content"] for t in turns]
            assert "transcript" not in browser.find_element(By.ID, side).text   # the turns, not the flat text
        assert browser.find_elements(By.CSS_SELECTOR, "#item img, #item script") == []
        assert browser.execute_script("return window.__pwned === undefined")
        # a side without turns is its text, as before
        assert browser.find_element(By.ID, "prompt").text == "What is 6*7?"
    finally:
        server.terminate()
        server.wait(10)
