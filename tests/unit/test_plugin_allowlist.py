"""FRL_LOAD_PLUGINS: an unknown name is an error with a did-you-mean; what it loads keeps its version."""
from importlib.metadata import version

import pytest

from feedback_rl import UserError
from feedback_rl.plugins import get_plugin_manager, plugin_versions


def test_an_unknown_name_is_an_error_naming_it(monkeypatch):
    monkeypatch.setenv("FRL_LOAD_PLUGINS", "rule,grpoo")
    with pytest.raises(UserError, match=r"FRL_LOAD_PLUGINS: no installed plugin or distribution 'grpoo' "
                                        r"\(did you mean 'grpo'\?\); installed: .*feedback_rl"):
        get_plugin_manager()


def test_plugins_loaded_by_the_allowlist_keep_their_distribution_version(monkeypatch):
    expected = f"feedback_rl {version('feedback_rl')}"
    monkeypatch.setenv("FRL_LOAD_PLUGINS", "rule,sft")
    assert plugin_versions(get_plugin_manager()) == {"rule": expected, "sft": expected}
    monkeypatch.delenv("FRL_LOAD_PLUGINS")
    everything = plugin_versions(get_plugin_manager())
    assert everything["rule"] == expected and everything["judge"] == expected


def test_a_distribution_name_loads_its_plugins(monkeypatch):
    monkeypatch.setenv("FRL_LOAD_PLUGINS", "feedback_rl")
    assert {"rule", "sft", "grpo", "judge"} <= set(plugin_versions(get_plugin_manager()))
