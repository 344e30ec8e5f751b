"""The lab's stand-in for the user's own API: answers every request with what
it received (method, path, the identity headers the edge set, body size), so
the request path through the edge can be seen end to end."""

import hashlib
import json
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

SHOWN_HEADERS = ("host", "x-user-id", "x-key-id", "content-type", "user-agent")


class Handler(BaseHTTPRequestHandler):
    server_version = "blackroad-lab-api"

    def answer(self):
        length = int(self.headers.get("content-length") or 0)
        body = self.rfile.read(length) if length else b""
        doc = {
            "service": "lab stand-in API on " + self.server.name,
            "method": self.command,
            "path": self.path,
            "headers": {k.lower(): v for k, v in self.headers.items() if k.lower() in SHOWN_HEADERS},
            "body_bytes": len(body),
            "body_sha256": hashlib.sha256(body).hexdigest(),
        }
        data = json.dumps(doc, indent=1, sort_keys=True).encode() + b"\n"
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = answer

    def log_message(self, fmt, *args):
        sys.stderr.write("%s %s\n" % (self.command, self.path))


def main():
    host, port = sys.argv[1].rsplit(":", 1)
    server = ThreadingHTTPServer((host, int(port)), Handler)
    server.name = sys.argv[2] if len(sys.argv) > 2 else host
    server.serve_forever()


if __name__ == "__main__":
    main()
