"""A person at a terminal: real `telnet` in a tmux pane, keys typed one at a
time, and the screen read back after each step. This is the README's telnet
session, plus the mistakes a person makes there.

Every wait polls the screen for the text it expects, bounded by WAIT.
"""

import shutil
import subprocess
import time
import uuid

import pytest

import broker as broker_process

WAIT = broker_process.WAIT
# A person types a few characters a second; a bit faster keeps the test short
# while a frame still takes longer than the broker's connect timeout below.
KEY_DELAY = 0.03
# telnet sends a line when Enter is pressed, so the first bytes arrive after
# "CONNECT" is typed: well within this, while the whole frame takes longer.
CONNECT_TIMEOUT_MS = 1000



@pytest.fixture(scope="module")
def port():
    for tool in ("telnet", "tmux"):
        assert shutil.which(tool), f"{tool} is missing: scripts/test.sh installs it"
    proc, ports = broker_process.start(
        ["--tcp-listen", "127.0.0.1:0", "--http-listen", "127.0.0.1:0", "--in-memory",
         "--connect-timeout-ms", str(CONNECT_TIMEOUT_MS)],
        {"tcp_addr": "tcp"},
    )
    yield ports["tcp"]
    broker_process.stop(proc)


class Terminal:
    """One tmux server of its own (its own socket), running telnet in a pane."""

    def __init__(self, port, folder):
        self.socket = f"stompbox-test-{uuid.uuid4().hex[:8]}"
        # Set before the pane exists: keep what telnet printed after it exits.
        conf = folder / "tmux.conf"
        conf.write_text("set -g history-limit 5000\nset -g remain-on-exit on\n")
        self.conf = str(conf)
        self.tmux("new-session", "-d", "-x", "200", "-y", "50", f"telnet 127.0.0.1 {port}")
        self.wait_for("Escape character is '^]'.")

    def tmux(self, *args):
        return subprocess.run(["tmux", "-L", self.socket, "-f", self.conf, *args], check=True,
                              capture_output=True, text=True, timeout=WAIT).stdout

    def screen(self):
        """Everything the pane has shown, wrapped lines joined."""
        return self.tmux("capture-pane", "-p", "-J", "-S", "-5000")

    def wait_for(self, *texts, after=0):
        """Waits until every text is on screen past offset `after`; returns
        the screen from `after` on."""
        deadline = time.monotonic() + WAIT
        while True:
            shown = self.screen()[after:]
            if all(t in shown for t in texts):
                return shown
            if time.monotonic() > deadline:
                raise AssertionError(f"{texts} not on screen:\n{shown}")
            time.sleep(0.05)

    def mark(self):
        """Where the screen ends now, to read only what comes after."""
        return len(self.screen().rstrip("\n"))

    def type_line(self, line):
        for ch in line:
            self.tmux("send-keys", "-l", ch)
            time.sleep(KEY_DELAY)
        self.tmux("send-keys", "Enter")

    def type_frame(self, *lines):
        """Types each line, then Ctrl+@ (NUL) and Enter, as the README says."""
        for line in lines:
            self.type_line(line)
        self.tmux("send-keys", "C-@")
        self.tmux("send-keys", "Enter")

    def close(self):
        subprocess.run(["tmux", "-L", self.socket, "kill-server"], capture_output=True,
                       timeout=WAIT)


@pytest.fixture
def terminal(port, tmp_path):
    t = Terminal(port, tmp_path)
    yield t
    t.close()


CONNECT = ("CONNECT", "accept-version:1.2", "host:localhost", "")


def test_the_readme_session_typed_slowly(terminal):
    # Typing CONNECT takes several times the connect timeout: a connection
    # whose bytes arrive line by line is given longer.
    started = time.monotonic()
    terminal.type_frame(*CONNECT)
    shown = terminal.wait_for("CONNECTED", "version:1.2", "server:stompbox/")
    assert time.monotonic() - started > CONNECT_TIMEOUT_MS / 1000, "typed too fast to show it"
    assert "ERROR" not in shown

    at = terminal.mark()
    terminal.type_frame("SUBSCRIBE", "id:0", "destination:/topic/chat.general", "receipt:joined", "")
    terminal.wait_for("RECEIPT", "receipt-id:joined", after=at)

    at = terminal.mark()
    terminal.type_frame("SEND", "destination:/topic/chat.general", "", "hello, room")
    shown = terminal.wait_for("MESSAGE", "subscription:0", "content-length:13", "hello, room",
                              after=at)
    message = shown[shown.index("MESSAGE"):]
    assert "destination:/topic/chat.general" in message
    assert "hello, room" in message

    at = terminal.mark()
    terminal.type_frame("DISCONNECT", "receipt:bye", "")
    terminal.wait_for("receipt-id:bye", "Connection closed by foreign host.", after=at)


def test_a_stray_ctrl_l_is_named_and_the_error_says_how_to_start_again(terminal):
    terminal.type_frame(*CONNECT)
    terminal.wait_for("CONNECTED")
    at = terminal.mark()
    terminal.tmux("send-keys", "C-l")
    terminal.type_frame("SUBSCRIBE", "id:1", "destination:/topic/a", "")
    shown = terminal.wait_for("ERROR", "Connection closed by foreign host.", after=at)
    message = next(line for line in shown.splitlines() if line.startswith("message:"))
    assert "Ctrl+L (form feed) at position 1" in message, message
    assert "upper-case" not in message, message
    assert "reconnect and type:" in shown
    assert "CONNECT\naccept-version:1.2" in shown


def test_a_header_line_without_a_colon_is_shown_as_typed(terminal):
    terminal.type_frame(*CONNECT)
    terminal.wait_for("CONNECTED")
    at = terminal.mark()
    terminal.type_frame("SEND", "destination /queue/a", "", "hi")
    shown = terminal.wait_for("ERROR", "Connection closed by foreign host.", after=at)
    message = next(line for line in shown.splitlines() if line.startswith("message:"))
    assert "destination /queue/a" in message, message
    assert "\\c" not in message, message
    assert "-----\nSEND\ndestination /queue/a\n-----" in shown, shown


def test_a_silent_telnet_is_told_the_limit_and_closed(terminal):
    shown = terminal.wait_for("no CONNECT received in time", "Connection closed by foreign host.")
    assert "1 s" in shown and "60 s" in shown, shown
