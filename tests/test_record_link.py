"""The event pipe between `record` and the oracle in its child never stalls a recording.

- `record` keeps reading whatever one event's handling raises (a dead reader would let the pipe
  fill and the child block).
- The oracle's progress events never wait for a full pipe (they are dropped, counted), while
  every question still arrives, whole, once the reader reads again.
"""

from __future__ import annotations

import os
import sys
import threading

from llm_oracle.record.child import Child
from llm_oracle.record.link import EVENTS, DoneEvent, QuestionEvent, RecorderLink

_WRITER = """
import os, sys
from llm_oracle.record.link import DoneEvent
fd = int(os.environ["LLM_ORACLE_RECORD_FD"])
sys.stdin.read()
for i in range(50):
    line = DoneEvent(failed=False, calls=i, tokens=0, usd=0).model_dump_json() + "\\n"
    os.write(fd, line.encode())
"""


def test_a_failing_event_handler_does_not_stop_the_reader() -> None:
    seen: list[int] = []

    def handle(event: object) -> None:
        assert isinstance(event, DoneEvent)
        if event.calls == 0:
            raise RuntimeError("a bug in one event's handling")
        seen.append(event.calls)

    child = Child([sys.executable, "-c", _WRITER], {}, on_event=handle)
    child.start()
    assert child.wait(60) == 0
    child.drain(timeout=30)
    assert seen == list(range(1, 50))


def test_progress_never_waits_for_a_full_pipe_and_questions_all_arrive() -> None:
    read, write = os.pipe()
    link = RecorderLink(write, None)
    progress = DoneEvent(failed=False, calls=1, tokens=2, usd=0.5)
    # Nobody reads: the pipe (64 KiB) fills, and progress is dropped instead of blocking.
    sender = threading.Thread(target=lambda: [link.send(progress) for _ in range(20_000)])
    sender.start()
    sender.join(timeout=60)
    assert not sender.is_alive() and link.dropped > 0

    questions = [QuestionEvent(key=f"{i:064x}", request="x" * 5000) for i in range(50)]
    asker = threading.Thread(target=lambda: [link.send(q) for q in questions])
    asker.start()  # waits for room: the reader below makes it
    received: list[object] = []
    buffer = b""
    with os.fdopen(read, "rb", buffering=0) as stream:
        while len([e for e in received if isinstance(e, QuestionEvent)]) < len(questions):
            chunk = stream.read(65536)
            assert chunk, "the pipe closed early"
            buffer += chunk
            *lines, buffer = buffer.split(b"\n")
            received += [EVENTS.validate_json(line) for line in lines]  # every line whole
        asker.join(timeout=60)
        assert not asker.is_alive()
        os.close(write)
    assert [e for e in received if isinstance(e, QuestionEvent)] == questions
