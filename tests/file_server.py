"""A local HTTP server for download tests: files by name (a mirror's `/<name>`) and the Hugging
Face Hub's `/<repo>/resolve/<revision>/<file>` with the headers its client reads; faults on
request (a transfer cut short); every request counted."""
import hashlib
import http.server
import threading
from typing import Dict

COMMIT = 'c0ffee' * 6 + 'c0ff'  # 40 hex digits, as the Hub's X-Repo-Commit


class FileServer:
  def __init__(self):
    self.files: Dict[str, bytes] = {}  # path (without the leading /) -> content
    self.cut_short = set()  # paths whose next transfer stops halfway
    self.requests: Dict[str, int] = {}
    server = self

    class Handler(http.server.BaseHTTPRequestHandler):
      def log_message(self, *args):  # quiet
        pass

      def _send(self, body_too: bool):
        path = self.path.lstrip('/')
        server.requests[path] = server.requests.get(path, 0) + 1
        if '/resolve/' in path:  # the Hub: <repo>/resolve/<revision>/<file>
          repo, _, rest = path.partition('/resolve/')
          path = f'{repo}/{rest.split("/", 1)[1]}'
        body = server.files.get(path)
        if body is None:
          self.send_error(404)
          return
        self.send_response(200)
        self.send_header('Content-Length', str(len(body)))
        self.send_header('ETag', '"' + hashlib.sha256(body).hexdigest() + '"')
        self.send_header('X-Repo-Commit', COMMIT)
        self.end_headers()
        if not body_too:
          return
        if path in server.cut_short and self.command == 'GET':
          server.cut_short.discard(path)
          self.wfile.write(body[:len(body) // 2])
          self.wfile.flush()
          self.close_connection = True
          return
        self.wfile.write(body)

      def do_HEAD(self):  # noqa: N802
        self._send(False)

      def do_GET(self):  # noqa: N802
        self._send(True)

    self.httpd = http.server.ThreadingHTTPServer(('127.0.0.1', 0), Handler)
    self.url = f'http://127.0.0.1:{self.httpd.server_address[1]}'
    self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

  def __enter__(self):
    self.thread.start()
    return self

  def __exit__(self, *exc):
    self.httpd.shutdown()
    self.httpd.server_close()
