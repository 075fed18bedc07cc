"""The results page (harness/reports/html.py) and the draft figures (harness/reports/figures.py):
escaping, the axis rule, the chosen points, the teacher's line, and the page opened in a real
headless Chromium (skipped only when no chromium binary exists)."""

import shutil
import subprocess

import pandas as pd
import pytest

_BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")


def _records(row="kd", seeds=(0, 1, 2, 3), teacher=True):
    """A toy table: none / ``row`` / omega_p on two tasks, one teacher job per task and seed
    (``report: False``, as a suite's teacher stage) whose accuracy the figures draw."""
    rows = []
    for task, base in (("task a", 80.0), ("task b", 70.0)):
        for s in seeds:
            tkey = f"T{task}{s}"
            if teacher:
                rows.append(
                    {
                        "key": tkey,
                        "stage": "teacher",
                        "table": None,
                        "task": None,
                        "dataset": "digits",
                        "regularizer": "none",
                        "method": "none",
                        "seed": s,
                        "test_accuracy": (base + 12) / 100,
                        "report": False,
                        "val_accuracy": 0.5,
                        "wall_time": 1.0,
                        "status": "completed",
                        "config": {"seed": s, "teacher": None},
                    }
                )
            for reg, gap in (("none", 0.0), (row, 4.0), ("omega_p", 2.0)):
                rows.append(
                    {
                        "key": f"{task}{reg}{s}",
                        "stage": "students",
                        "table": "t",
                        "task": task,
                        "dataset": "digits",
                        "regularizer": reg,
                        "method": reg,
                        "seed": s,
                        "report": True,
                        "test_accuracy": (base + gap + s) / 100,
                        "val_accuracy": 0.5,
                        "wall_time": 1.0,
                        "status": "completed",
                        "config": {"seed": s, "teacher": tkey},
                    }
                )
    return pd.DataFrame(rows)


def test_page_escapes_what_comes_from_files(tmp_path):
    from harness.reports.tables import write_report

    evil = "<script>alert(1)</script>"
    paths = write_report(
        "toy",
        out_dir=tmp_path / "toy",
        records_df=_records(row=evil),
        plots=False,
        page={
            "description": "a <b>toy</b>",
            "suite_text": "name: toy  # <i>\n",
            "command": "otransfer report toy",
        },
    )
    page = paths["html"].read_text()
    assert paths["html"] == tmp_path / "toy" / "index.html"
    assert "<script" not in page and "<b>toy" not in page and "<i>" not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page  # the row name, as text
    assert "a &lt;b&gt;toy&lt;/b&gt;" in page and "name: toy  # &lt;i&gt;" in page
    assert "<code>otransfer report toy</code>" in page
    assert page.count("<table") >= 2  # the leaderboard and the per-seed values
    assert "<details><summary>t</summary>" in page  # per-seed values, collapsible
    assert '<a href="leaderboard.csv">leaderboard.csv</a>' in page


def test_markdown_subset_renders_and_drops_unsafe_links():
    from harness.reports.html import markdown_html

    out = markdown_html(
        "# T <x>\n\n| a | b |\n|:--|--:|\n| **1** | `x<y` |\n\n"
        "- one [ok](sub/page.md)\n  more\n- [bad](javascript:alert)\n\n"
        "![fig](f.png)\n",
        links={"sub/page.md": "sub/index.html"},
    )
    assert "<h1>T &lt;x&gt;</h1>" in out
    assert "<th>a</th><th>b</th>" in out and "<td><strong>1</strong></td>" in out
    assert "<td class=r><code>x&lt;y</code></td>" in out  # right-aligned column
    assert '<li>one <a href="sub/index.html">ok</a> more</li>' in out
    assert "<li>bad</li>" in out and 'href="javascript' not in out  # the text only
    assert '<img src="f.png" alt="fig">' in out


def test_value_axis_starts_at_zero_unless_that_hides_every_gap():
    from harness.reports.figures import GAP_SHARE, value_axis

    seeds = pd.DataFrame({("a", 0): [90.0, 93.0], ("a", 1): [92.0, 95.0]}, index=["x", "y"])
    mean = pd.DataFrame({"a": [91.0, 94.0]}, index=["x", "y"])
    std = pd.DataFrame({"a": [1.0, 1.0]}, index=["x", "y"])
    lo, hi, broken = value_axis(mean, std, seeds)  # a 3-point gap on a 0-100 axis: broken
    assert (lo, hi, broken) == (85.0, 100.0, True)
    wide = mean.assign(a=[50.0, 94.0])  # a 44-point gap is visible from 0
    assert value_axis(wide, std, seeds) == (0.0, 100.0, False)
    assert GAP_SHARE == 0.10


def test_chosen_points_are_the_most_frequent_over_seeds():
    from harness.reports.figures import chosen_points

    ch = pd.DataFrame(
        {
            "row": ["kd"] * 3 + ["a+kd"] * 2,
            "task": ["t"] * 5,
            "point": [
                "kd (kd.tau=4, alpha=0.1)",
                "kd (kd.tau=4, alpha=0.1)",
                "kd (kd.tau=5, alpha=1)",
                "a+kd (a.alpha=1, kd.alpha=2)",
                "a+kd (a.alpha=1, kd.alpha=2)",
            ],
        }
    )
    assert chosen_points(ch) == {
        ("kd", "t"): "tau=4, alpha=0.1",
        ("a+kd", "t"): "a.alpha=1, kd.alpha=2",
    }  # distinct names
    assert chosen_points(ch, by_task=False)["kd"] == "tau=4, alpha=0.1"


def test_teacher_accuracy_is_carried_into_runs_csv(tmp_path):
    from harness.reports.tables import write_report

    paths = write_report("toy", out_dir=tmp_path / "toy", records_df=_records(), plots=False)
    runs = pd.read_csv(paths["runs"])
    assert set(runs["table"]) == {"t"}  # the teacher jobs are not a table
    assert runs.loc[runs["task"] == "task a", "teacher_accuracy"].tolist() == pytest.approx(
        [0.92] * 12
    )


def _colour_pixels(png, rgb, tol=14):
    import numpy as np
    from PIL import Image

    a = np.asarray(Image.open(png).convert("RGB")).astype(int)
    return int((np.abs(a - np.array(rgb)).max(axis=2) <= tol).sum()), a


def test_page_opens_in_headless_chromium(tmp_path):
    """The page of a small report, screenshotted by a real browser: not blank, the leaderboard
    drawn (its header cells' grey) and the figure loaded (its bars' colours)."""
    from harness.reports.tables import write_report

    browser = next((shutil.which(b) for b in _BROWSERS if shutil.which(b)), None)
    if browser is None:
        pytest.skip("no chromium binary on PATH (apt-get install chromium; .ci/run does)")
    paths = write_report("toy", out_dir=tmp_path / "toy", records_df=_records())
    page = paths["html"].read_text()
    assert '<img src="t.png" alt="t">' in page and (tmp_path / "toy" / "t.png").is_file()
    assert (tmp_path / "toy" / "t.pdf").read_bytes().startswith(b"%PDF")
    assert "<table>" in page and "<th>regularizer</th>" in page
    shot = tmp_path / "shot.png"
    run = subprocess.run(
        [
            browser,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--hide-scrollbars",
            f"--screenshot={shot}",
            "--window-size=1200,1600",
            paths["html"].as_uri(),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert shot.is_file(), run.stderr[-2000:]
    grey, pixels = _colour_pixels(shot, (243, 243, 243), tol=2)  # th background
    assert pixels.std() > 20 and (pixels.min(axis=2) < 250).mean() > 0.02  # not blank
    assert grey > 500
    # tab:blue and tab:orange at alpha 0.8 over white: the kd and omega_p bars of the figure
    blue, _ = _colour_pixels(shot, (76, 146, 195))
    orange, _ = _colour_pixels(shot, (255, 152, 62))
    assert blue > 300 and orange > 300, (blue, orange)
