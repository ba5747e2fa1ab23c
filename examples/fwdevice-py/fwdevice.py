#!/usr/bin/env python3
"""A device that takes its firmware over the air from a Moongate gateway, written from
firmware/PROTOCOL.md alone: a second implementation beside examples/fwdevice (Go), and
the starting point for a MicroPython device.

    fwdevice.py --broker tcp://127.0.0.1:1883 --id dev-1 --type esp32-env \
        --version 1.0.0 --counter 1 --key fw.pub --dir state/ [--exit] [--drop-at N]

It keeps what flash would keep in --dir: the image it runs (running.json) and a partial
download (download.bin with download.json, the offer it belongs to), so it resumes from
its last good offset after a disconnect or a restart of either side. It checks the
image's sha256 and its ed25519 signature before it applies it. It prints one line per
step on stdout; with --exit it exits after the first update ends (healthy: 0, failed: 3).

Needs Debian's python3-paho-mqtt (1.6) and python3-nacl: the standard library has no
ed25519, and PyNaCl (libsodium) is the smaller of Debian's two packages that have it
(python3-cryptography being the other). On MicroPython, umqtt.simple and a pure-Python
ed25519 take their place.
"""

import argparse
import base64
import datetime
import hashlib
import json
import os
import queue
import sys
import urllib.parse

import nacl.exceptions
import nacl.signing
import paho.mqtt.client as mqtt

# The device-side timings of PROTOCOL.md, "Timeouts and retries".
GET_TIMEOUT = 5.0
GET_TRIES = 5
OFFER_WAIT = 10.0
RESTATE_ROUNDS = 3
STATE_EVERY = 64 << 10

EXIT_FAILED = 3
PUBLIC_PREFIX = "moongate-fw-pub:"


class Failed(Exception):
    """An update that ended in the failed state; its message is the state's error."""


def log(*words):
    print(*words, flush=True)


def read_json(path, default):
    try:
        with open(path) as f:
            return json.load(f)
    except FileNotFoundError:
        return default


def write_json(path, value):
    # Written beside and renamed, so a power cut leaves the old file or the new one.
    with open(path + ".tmp", "w") as f:
        json.dump(value, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(path + ".tmp", path)


def load_key(path):
    with open(path) as f:
        text = f.read().strip()
    if not text.startswith(PUBLIC_PREFIX):
        raise SystemExit(f"{path}: not a moongate firmware public key")
    return nacl.signing.VerifyKey(base64.b64decode(text[len(PUBLIC_PREFIX):]))


def signed_message(offer):
    expires = datetime.datetime.fromisoformat(offer["expires"].replace("Z", "+00:00"))
    fields = (offer["type"], offer["version"], offer["counter"], int(expires.timestamp()), offer["size"], offer["sha256"])
    window = offer.get("health_window_seconds", 0)
    if not window:  # a manifest signed before the health window
        return ("moongate-fw-v2\n%s\n%s\n%d\n%d\n%d\n%s\n" % fields).encode()
    return ("moongate-fw-v3\n%s\n%s\n%d\n%d\n%d\n%s\n%d\n" % (fields + (window,))).encode()


def offer_form_ok(offer, typ):
    try:
        return (offer["type"] == typ and isinstance(offer["counter"], int) and offer["counter"] > 0
                and isinstance(offer["size"], int) and offer["size"] > 0
                and isinstance(offer["chunk_size"], int) and offer["chunk_size"] > 0
                and len(bytes.fromhex(offer["sha256"])) == 32
                and len(base64.b64decode(offer["signature"])) == 64
                and isinstance(offer["version"], str) and isinstance(offer["expires"], str)
                and isinstance(offer.get("health_window_seconds", 0), int))
    except (KeyError, TypeError, ValueError):
        return False


class Device:
    def __init__(self, args):
        self.args = args
        self.key = load_key(args.key)
        os.makedirs(args.dir, exist_ok=True)
        self.running_path = os.path.join(args.dir, "running.json")
        self.meta_path = os.path.join(args.dir, "download.json")
        self.data_path = os.path.join(args.dir, "download.bin")
        self.running = read_json(self.running_path, {"version": args.version, "counter": args.counter})
        self.offer = read_json(self.meta_path, None)  # the offer being downloaded, or None
        self.offset = self.held()
        self.dropped = False
        self.events = queue.Queue()  # (kind, topic, payload) from paho's network thread

        self.base = "moongate/devices/%s/fw/" % args.id
        url = urllib.parse.urlparse(args.broker)
        self.client = mqtt.Client(client_id=args.id, clean_session=True)
        self.client.on_connect = self.on_connect
        self.client.on_message = lambda c, u, m: self.events.put(("message", m.topic, m.payload))
        self.client.on_disconnect = lambda c, u, rc: self.events.put(("disconnected", "", rc))
        self.client.reconnect_delay_set(min_delay=1, max_delay=2)
        self.client.connect_async(url.hostname, url.port or 1883, keepalive=30)

    def held(self):
        """The bytes of the download held and checked, kept only with its offer."""
        if self.offer is None:
            return 0
        try:
            return os.path.getsize(self.data_path)
        except FileNotFoundError:
            return 0

    def on_connect(self, client, userdata, flags, rc):
        if rc != 0:
            return
        # First the subscriptions, then the state: the gateway answers the state at once.
        client.subscribe([(self.base + "offer", 1), (self.base + "chunk/+", 0)])
        self.events.put(("connected", "", rc))

    def publish_state(self, status, target=0, offset=0, error=""):
        st = {"type": self.args.type, "version": self.running["version"], "counter": self.running["counter"],
              "status": status}
        if target:
            st["target"] = target
        if offset:
            st["offset"] = offset
        if error:
            st["error"] = error
        self.status = status
        self.client.publish(self.base + "state", json.dumps(st), qos=1, retain=True)

    def report(self):
        """The state after a (re)connection: a download in progress says where it is."""
        if self.offer is not None:
            self.publish_state("downloading", self.offer["counter"], self.offset)
        else:
            self.publish_state(self.status if self.status in ("healthy", "failed") else "idle",
                               self.failed_target, error=self.failed_error)

    def next_event(self, timeout):
        try:
            return self.events.get(timeout=timeout)
        except queue.Empty:
            return None

    def run(self):
        self.status, self.failed_target, self.failed_error = "idle", 0, ""
        self.client.loop_start()
        try:
            return self.loop()
        finally:
            self.client.disconnect()
            self.client.loop_stop()

    def loop(self):
        """idle (or healthy, failed): wait for an offer; a held download resumes at connect."""
        while True:
            ev = self.next_event(None)
            kind, topic, payload = ev
            if kind == "connected":
                self.report()
                if self.offer is not None:
                    result = self.update(self.offer)
                    if result is not None:
                        return result
            elif kind == "message" and topic == self.base + "offer":
                offer = self.parse_offer(payload)
                if offer is not None:
                    result = self.update(offer)
                    if result is not None:
                        return result

    def parse_offer(self, payload):
        try:
            offer = json.loads(payload)
        except ValueError:
            return None
        if not isinstance(offer, dict) or not offer_form_ok(offer, self.args.type):
            log("ignoring an offer that is not one")
            return None
        if offer["counter"] <= self.running["counter"]:
            log("ignoring an offer of counter %d: not above the running %d" % (offer["counter"], self.running["counter"]))
            return None
        return offer

    def update(self, offer):
        """offered → downloading → verifying → applied → healthy, or failed. Returns the
        exit code when --exit says to stop, else None (back to waiting)."""
        try:
            self.download(offer)
            image_ok = self.verify()
        except Failed as e:
            self.fail(offer, str(e))
            return EXIT_FAILED if self.args.exit else None
        if not image_ok:
            return EXIT_FAILED if self.args.exit else None
        self.apply()
        return 0 if self.args.exit else None

    def start(self, offer):
        """offered: keep the held bytes if this is the offer they belong to."""
        if self.offer is not None and self.offer["sha256"] == offer["sha256"]:
            self.offset = self.held()
        else:
            self.offer, self.offset = offer, 0
            open(self.data_path, "wb").close()
        self.offer["chunk_size"] = offer["chunk_size"]  # the newest gateway's word on it
        write_json(self.meta_path, self.offer)
        log("offered %s counter %d (%d bytes)" % (offer["version"], offer["counter"], offer["size"]))
        self.publish_state("offered", offer["counter"])
        log("downloading from offset %d" % self.offset)

    def download(self, offer):
        self.start(offer)
        size = self.offer["size"]
        reported = self.offset
        rounds = 0
        while self.offset < size:
            if self.args.drop_at >= 0 and not self.dropped and self.offset >= self.args.drop_at:
                self.drop()
            got = self.fetch_chunk()
            if got is None:
                # Five gets unanswered: say where we are and wait for the gateway's offer.
                rounds += 1
                if rounds > RESTATE_ROUNDS:
                    raise Failed("gateway not answering")
                log("no answer at offset %d, reporting the state again" % self.offset)
                self.publish_state("downloading", self.offer["counter"], self.offset)
                new = self.wait_offer()
                if new is not None and new["sha256"] != self.offer["sha256"]:
                    self.offer = None
                    self.start(new)
                    size = self.offer["size"]
                elif new is not None:
                    log("resumed at offset %d" % self.offset)
                continue
            rounds = 0
            with open(self.data_path, "ab") as f:
                f.write(got)
                f.flush()
                os.fsync(f.fileno())
            self.offset += len(got)
            if self.offset - reported >= STATE_EVERY or self.offset == size:
                reported = self.offset
                self.publish_state("downloading", self.offer["counter"], self.offset)
        log("received %d bytes" % self.offset)

    def drop(self):
        """--drop-at: lose the connection once, as a radio would, and come back."""
        self.dropped = True
        log("dropping the connection at offset %d" % self.offset)
        self.client.disconnect()
        self.client.loop_stop()
        self.client.reconnect()
        self.client.loop_start()

    def fetch_chunk(self):
        """One get, sent again up to GET_TRIES times; the chunk, or None if none came."""
        want = min(self.offer["chunk_size"], self.offer["size"] - self.offset)
        request = json.dumps({"offset": self.offset, "length": want})
        topic = self.base + "chunk/%d" % self.offset
        for _ in range(GET_TRIES):
            self.client.publish(self.base + "get", request, qos=0)
            deadline = GET_TIMEOUT
            while True:
                ev = self.next_event(deadline)
                if ev is None:
                    break  # this try is spent
                kind, t, payload = ev
                if kind == "connected":
                    log("connection lost at offset %d, resuming" % self.offset)
                    self.publish_state("downloading", self.offer["counter"], self.offset)
                    break  # the get was lost with the connection: send it again
                if kind != "message":
                    continue
                if t == topic:
                    if len(payload) == want:
                        return payload
                    log("discarding a chunk of %d bytes at offset %d, want %d" % (len(payload), self.offset, want))
                    break  # counts as a try
                if t == self.base + "offer":
                    # A gateway that restarted offers again: the same image resumes.
                    offer = self.parse_offer(payload)
                    if offer is not None and offer["sha256"] == self.offer["sha256"]:
                        break
        return None

    def wait_offer(self):
        """After a round of unanswered gets: an offer within OFFER_WAIT, or None."""
        remaining = OFFER_WAIT
        while True:
            ev = self.next_event(remaining)
            if ev is None:
                return None
            kind, t, payload = ev
            if kind == "message" and t == self.base + "offer":
                offer = self.parse_offer(payload)
                if offer is not None:
                    return offer

    def verify(self):
        """verifying: the whole image's sha256, then the signature with our own key."""
        self.publish_state("verifying", self.offer["counter"], self.offset)
        h = hashlib.sha256()
        with open(self.data_path, "rb") as f:
            for block in iter(lambda: f.read(64 << 10), b""):
                h.update(block)
        if h.hexdigest() != self.offer["sha256"]:
            self.fail(self.offer, "sha256")
            return False
        try:
            self.key.verify(signed_message(self.offer), base64.b64decode(self.offer["signature"]))
        except nacl.exceptions.BadSignatureError:
            self.fail(self.offer, "signature")
            return False
        return True

    def apply(self):
        """applied, then the new image boots and confirms itself: healthy."""
        offer = self.offer
        self.publish_state("applied", offer["counter"])
        log("applied %s counter %d" % (offer["version"], offer["counter"]))
        self.running = {"version": offer["version"], "counter": offer["counter"]}
        write_json(self.running_path, self.running)
        self.discard()
        self.failed_target, self.failed_error = 0, ""
        self.publish_state("healthy")
        log("healthy %s counter %d" % (offer["version"], offer["counter"]))

    def fail(self, offer, error):
        """failed: the image is discarded, the old one keeps running."""
        self.discard()
        self.failed_target, self.failed_error = offer["counter"], error
        self.publish_state("failed", offer["counter"], error=error)
        log("failed: %s" % error)

    def discard(self):
        self.offer, self.offset = None, 0
        for p in (self.data_path, self.meta_path):
            try:
                os.remove(p)
            except FileNotFoundError:
                pass


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--broker", default="tcp://127.0.0.1:1883")
    p.add_argument("--id", default="fwdev-py-1", help="device id: the MQTT client id and the topic level")
    p.add_argument("--type", default="esp32-env")
    p.add_argument("--version", default="1.0.0", help="the version it runs at first (--dir keeps the one it updated to)")
    p.add_argument("--counter", type=int, default=1, help="the version counter it runs at first")
    p.add_argument("--key", required=True, help="the public key it trusts (moongate firmware keygen)")
    p.add_argument("--dir", default="fwdevice-state", help="where it keeps its running version and a partial download")
    p.add_argument("--drop-at", type=int, default=-1, help="drop the connection once when this many bytes are held")
    p.add_argument("--exit", action="store_true", help="exit after the first update ends (healthy: 0, failed: 3)")
    sys.exit(Device(p.parse_args()).run() or 0)


if __name__ == "__main__":
    main()
