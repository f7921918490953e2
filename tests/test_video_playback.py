"""A blurred video plays in a browser with its audio: headless Chromium (Debian's, whose media stack has
H.264 and AAC) loads `blazeface blur`'s output in a <video>, plays it, decodes video and audio, and draws a
frame. The input is MPEG-4 part 2 (mp4v), which Chromium cannot decode: the same checks fail on it, so
they can fail.

Needs Debian's chromium, Node.js and `npm ci --prefix web` (playwright-core); skips with the reason when
one is missing.
"""
import functools
import http.server
import json
import shutil
import subprocess
import threading

import pytest

from blazeface.cli import main
from blazeface.video import ffmpeg_exe, probe
from conftest import CHROMIUM, NODE, REPO, chromium_skip_reason

WEB = REPO / "web"

WIDTH, HEIGHT, SECONDS = 320, 180, 1.5


def make_mp4v_clip(path):
    """SECONDS of ffmpeg's test pattern in MPEG-4 part 2 with a 440 Hz sine in AAC."""
    subprocess.run([ffmpeg_exe(), "-v", "error", "-y",
                    "-f", "lavfi", "-i", f"testsrc=size={WIDTH}x{HEIGHT}:rate=10:duration={SECONDS}",
                    "-f", "lavfi", "-i", f"sine=frequency=440:duration={SECONDS}",
                    "-c:v", "mpeg4", "-tag:v", "mp4v", "-q:v", "5", "-c:a", "aac", "-shortest", str(path)],
                   check=True)
    return path


def play_in_chromium(folder, names) -> dict:
    """Serve ``folder`` over HTTP and play each of ``names`` in headless Chromium: {"h264": its canPlayType
    answer for H.264 and AAC in MP4, "videos": {name: report}}."""
    handler = functools.partial(QuietHandler, directory=str(folder))
    with http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler) as server:
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        try:
            options = {"url": f"http://127.0.0.1:{server.server_address[1]}/", "videos": names,
                       "chromium": CHROMIUM, "playSeconds": 0.5}
            done = subprocess.run([NODE, str(WEB / "tests" / "play_video.mjs"), json.dumps(options)],
                                  capture_output=True, text=True, timeout=180, cwd=WEB, check=False)
        finally:
            server.shutdown()
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result.get("error") is None and result["pageErrors"] == [], result
    return result


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


def playback_failures(report: dict) -> list[str]:
    """What keeps a <video> report from 'plays, picture and sound' (empty: it plays)."""
    checks = {
        "loaded": report["loadEvent"] == "loadeddata" and report["readyState"] >= 2,
        "size": (report["videoWidth"], report["videoHeight"]) == (WIDTH, HEIGHT),
        "duration": report["duration"] is not None and abs(report["duration"] - SECONDS) < 0.2,
        "plays": report["currentTime"] >= 0.4 and report.get("playError") is None and report["error"] is None,
        "video decoded": report["videoDecodedBytes"] > 0,
        "audio decoded": report["audioDecodedBytes"] > 0,
        "picture": report.get("brightest", 0) > 64,  # the test pattern, not a black frame
        "sound": report["audio"].get("peak", 0) > 0.05 and abs(report["audio"].get("seconds", 0) - SECONDS) < 0.2,
    }
    return [name for name, ok in checks.items() if not ok]


@pytest.mark.skipif(chromium_skip_reason() is not None, reason=chromium_skip_reason() or "")
def test_blurred_video_plays_in_chromium_with_its_audio(tmp_path, capsys):
    src = make_mp4v_clip(tmp_path / "clip.mp4")
    rc = main(["blur", str(src), "--out", str(tmp_path / "out")])
    assert rc == 0, capsys.readouterr().err
    written = tmp_path / "out" / "clip.mp4"
    assert probe(written)["video_codec"] == "h264" and probe(written)["audio"]
    shutil.copy(src, tmp_path / "out" / "input.mp4")
    result = play_in_chromium(tmp_path / "out", ["clip.mp4", "input.mp4"])
    assert result["h264"] == "probably"  # this Chromium's media stack has H.264 and AAC
    reports = result["videos"]
    assert playback_failures(reports["clip.mp4"]) == [], reports["clip.mp4"]
    # The same checks on the mp4v input: Chromium plays its audio but has no decoder for its video.
    assert {"size", "video decoded", "picture"} <= set(playback_failures(reports["input.mp4"])), reports["input.mp4"]
