# Run inside a session (alice's Jupyter kernel) by the hostile-tenant suite: every attack of
# architecture.md contract 5 / issue 8, each recorded as {"ok": succeeded?, "detail": …}. Printed as one JSON line.
import json, os, socket, urllib.request, urllib.error, base64

P = json.loads(base64.b64decode(PARAMS_B64).decode())
R = {}

def attempt(name, fn):
    try:
        out = fn()
        # Returning None or False means the attack got an answer that refused it.
        R[name] = {"ok": out is not None and out is not False, "detail": str(out)[:160]}
    except Exception as e:  # any failure is the attack failing
        R[name] = {"ok": False, "detail": (type(e).__name__ + ": " + str(e))[:160]}

def read(path, n=64):
    with open(path, "rb") as f:
        return f.read(n) or b"(empty)"

def write(path):
    with open(path, "ab") as f:
        f.write(b"")
    return True

def tcp(host, port, timeout=2.0):
    s = socket.create_connection((host, port), timeout=timeout)
    s.close()
    return True

def http_status(url, data=None, headers=None, timeout=3.0):
    req = urllib.request.Request(url, data=data, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, dict(r.headers)
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers)

def got_cookie(url, data, headers):
    status, h = http_status(url, data=data, headers=headers)
    cookie = h.get("Set-Cookie", "") or ""
    return status < 400 and P["cookieName"] in cookie

def ws_upgrade(host, port, path):
    s = socket.create_connection((host, port), timeout=3.0)
    s.sendall(("GET %s HTTP/1.1\r\nHost: %s:%d\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
               "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n" % (path, host, port)).encode())
    head = s.recv(200).decode("latin1")
    s.close()
    return head.split("\r\n")[0] if " 101 " in head else None

R["uid"] = os.getuid()
R["gid"] = os.getgid()
R["groups"] = os.getgroups()
attempt("read the store", lambda: read(P["store"]))
attempt("write the store", lambda: write(P["store"]))
attempt("list the data directory", lambda: os.listdir(P["dataDir"]))
attempt("write into the data directory", lambda: write(os.path.join(P["dataDir"], "planted")))
attempt("read the server's environment", lambda: read("/proc/%d/environ" % P["serverPid"]))
attempt("read bob's environment", lambda: read("/proc/%d/environ" % P["bobPid"]))
attempt("list bob's directory", lambda: os.listdir(P["bobHome"]))
attempt("read bob's record", lambda: read(P["bobRecord"]))
attempt("forge alice's record", lambda: write(P["aliceRecord"]))
attempt("signal bob's process", lambda: os.kill(P["bobPid"], 0) or True)
attempt("signal the server", lambda: os.kill(P["serverPid"], 0) or True)
attempt("connect to bob's port", lambda: tcp(P["bobHost"], P["bobPort"]))
attempt("use bob's Jupyter directly", lambda: http_status("http://%s:%d%sapi/kernels" % (P["bobHost"], P["bobPort"], P["bobBase"]))[0] == 200)
attempt("open bob's kernel WebSocket directly", lambda: ws_upgrade(P["bobHost"], P["bobPort"], "%sapi/kernels/%s/channels" % (P["bobBase"], P["bobKernel"])))
attempt("use carol's demo app directly", lambda: http_status("http://%s:%d/" % (P["carolHost"], P["carolPort"]))[0] == 200)
attempt("connect to the server on loopback", lambda: tcp("127.0.0.1", P["serverPort"]))
for h in P["hostAddrs"]:
    attempt("connect to the server at %s" % h, lambda h=h: tcp(h, P["serverPort"]))
attempt("connect to Postgres on loopback", lambda: tcp("127.0.0.1", 5432))
attempt("dev login as bob", lambda: got_cookie("http://127.0.0.1:%d/login" % P["serverPort"], b"user=bob", {"Content-Type": "application/x-www-form-urlencoded"}))
attempt("header login as bob", lambda: got_cookie("http://127.0.0.1:%d/login" % P["serverPort"], b"", {"X-Forwarded-User": "bob", "Remote-User": "bob"}))
print("ATTACKS " + json.dumps(R))
