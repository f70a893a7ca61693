"""The real components the suite depends on are present and work: a missing one fails here, loudly."""
from __future__ import annotations

import os
import socket
import threading
import time
from pathlib import Path

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion
from PIL import Image

from device.testbench.broker import MosquittoBroker


def test_zbar_reads_a_real_photo(testdata: Path) -> None:
    from pyzbar.pyzbar import decode  # fails when libzbar0 is missing

    folder = testdata / "barcodes" / "zbar-examples"
    expected = (folder / "code-128.txt").read_text().strip()
    results = decode(Image.open(folder / "code-128.png"))
    assert [r.data.decode() for r in results] == [expected]


def test_tflite_interpreter_is_installed() -> None:
    from ai_edge_litert.interpreter import Interpreter

    assert callable(Interpreter)


def _roundtrip(port: int, topic: str) -> bytes:
    received: list[bytes] = []
    done = threading.Event()
    sub = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=MQTTProtocolVersion.MQTTv5)
    sub.on_message = lambda c, u, m: (received.append(m.payload), done.set())
    sub.connect("127.0.0.1", port)
    sub.subscribe(topic, qos=1)
    sub.loop_start()
    try:
        time.sleep(0.2)
        pub = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=MQTTProtocolVersion.MQTTv5)
        pub.connect("127.0.0.1", port)
        pub.loop_start()
        pub.publish(topic, b"hello", qos=1).wait_for_publish(5)
        pub.loop_stop()
        pub.disconnect()
        assert done.wait(5), "no message came back through the broker"
    finally:
        sub.loop_stop()
        sub.disconnect()
    return received[0]


def test_mosquitto_fixture_carries_messages_and_restarts(broker: MosquittoBroker) -> None:
    assert _roundtrip(broker.port, "flex/v1/test/ping") == b"hello"
    broker.kill()
    assert not broker.running
    try:
        socket.create_connection(("127.0.0.1", broker.port), timeout=1).close()
        raise AssertionError("broker port still open after kill")
    except OSError:
        pass
    broker.start()
    assert _roundtrip(broker.port, "flex/v1/test/ping2") == b"hello"


def test_gpsfake_serves_tpv_from_a_real_log(gpsfake, testdata: Path) -> None:
    log = testdata / "gps" / "gpsd-test-daemon" / "neo-m8n.log"
    # Looping: gpsfake feeds from its start, watched or not; a watch that comes late under load still gets TPVs.
    fake = gpsfake(log, loop=True)
    with socket.create_connection(("127.0.0.1", fake.port), timeout=10) as sock:
        sock.sendall(b'?WATCH={"enable":true,"json":true};\n')
        buf = b""
        deadline = time.monotonic() + 20
        while b'"class":"TPV"' not in buf and time.monotonic() < deadline:
            chunk = sock.recv(65536)
            if not chunk:
                break
            buf += chunk
    assert b'"class":"TPV"' in buf


def test_pty_pair_is_raw(pty_pair) -> None:
    # A cooked tty would turn CR into LF and echo; a raw one passes bytes through untouched.
    os.write(pty_pair.master_fd, b"123\r\x00\xff\n")
    time.sleep(0.05)
    assert os.read(pty_pair.slave_fd, 64) == b"123\r\x00\xff\n"
    os.write(pty_pair.slave_fd, b"ok\r\n")
    time.sleep(0.05)
    assert os.read(pty_pair.master_fd, 64) == b"ok\r\n"
