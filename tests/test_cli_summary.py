"""The `clm run` summary's RL line says how the agent did against the baselines, and when it lost money."""

import json

from clm.cli import _policy_lines
from clm.lake import Lake


def write_report(root, verdict, agent_net):
    folder = Lake(root).policies_dir / "offline-abc"
    folder.mkdir(parents=True)
    (folder / "training_report.json").write_text(json.dumps({
        "data": {"held_out": {"trades": 400}},
        "evaluation": {"verdict": verdict, "policies": {
            "agent": {"total_net_return": agent_net}, "fixed_size": {"total_net_return": -0.15},
            "random": {"total_net_return": -0.25}}},
    }))


def test_a_losing_agent_that_beats_losing_baselines_is_said_to_lose_money(tmp_path):
    write_report(tmp_path, "the agent beats both baselines: beats fixed-size by +0.52 bps of equity per candidate "
                           "trade (95% CI -0.20 .. +1.25, not significant); beats random by +3.97 bps of equity per "
                           "candidate trade (95% CI +2.82 .. +5.11, significant); on its own ...: it lost money", -0.13)
    line = _policy_lines(Lake(tmp_path))[0]
    assert "agent -13.00%, fixed-size -15.00%, random -25.00%" in line
    assert "the agent beats both baselines, and it lost money" in line
    assert "(vs fixed-size: not significant; vs random: significant)" in line


def test_a_profitable_agent_is_not_said_to_lose(tmp_path):
    write_report(tmp_path, "the agent beats both baselines: beats fixed-size by +2.00 bps of equity per candidate "
                           "trade (95% CI +1.00 .. +3.00, significant); beats random by +4.00 bps of equity per "
                           "candidate trade (95% CI +3.00 .. +5.00, significant)", 0.04)
    line = _policy_lines(Lake(tmp_path))[0]
    assert "lost money" not in line and "(vs fixed-size: significant; vs random: significant)" in line


def test_an_unreadable_report_is_named(tmp_path):
    folder = Lake(tmp_path).policies_dir / "offline-abc"
    folder.mkdir(parents=True)
    (folder / "training_report.json").write_text("{not json")
    assert "cannot be read" in _policy_lines(Lake(tmp_path))[0]
