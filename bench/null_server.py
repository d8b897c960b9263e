"""The floor of benchmark 6: an HTTP server that does no work. `python -m bench.null_server ANSWER_FILE`
listens on a free 127.0.0.1 port, on the same uvicorn (and so httptools and uvloop, where installed) as
`torchassistant serve`, reads each request's body and answers it with the bytes of ANSWER_FILE. Its first
line is "... at http://127.0.0.1:PORT", as serve's is. What the benchmark's clients reach against it is
the most any server could answer on this machine under the same clients."""
import socket
import sys

import uvicorn


def main():
    with open(sys.argv[1], 'rb') as f:
        answer = f.read()
    headers = [(b'content-type', b'application/json'), (b'content-length', str(len(answer)).encode())]

    async def app(scope, receive, send):
        if scope['type'] != 'http':
            return
        more = True
        while more:
            message = await receive()
            more = message.get('more_body', False)
        await send({'type': 'http.response.start', 'status': 200, 'headers': headers})
        await send({'type': 'http.response.body', 'body': answer})

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)      # as serve's: Nagle off
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.bind(('127.0.0.1', 0))

    class Server(uvicorn.Server):
        async def startup(self, sockets=None):
            await super().startup(sockets=sockets)
            print(f'null server at http://127.0.0.1:{sock.getsockname()[1]}', flush=True)

    Server(uvicorn.Config(app, log_level='warning', access_log=False, lifespan='off')).run(sockets=[sock])


if __name__ == '__main__':
    main()
